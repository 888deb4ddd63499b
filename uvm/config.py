"""The frozen configuration: defaults, TOML files and ``CVMFS_*`` environment, merged once.

Why one frozen object: every component receives its settings from the caller
(see ``style-anchors.md``: no global mutable configuration), and
``uvm config show`` can say where each value came from.

Precedence, lowest to highest:

1. built-in defaults (the stock client's, except ``http_proxy = DIRECT``);
2. built-in domain data (the stratum-1 list of ``cern.ch``, ``egi.eu``,
   ``opensciencegrid.org``; see :mod:`uvm.cvmfs.domains`);
3. the top level of each TOML file, in order: system files
   (``$XDG_CONFIG_DIRS/uvm/config.toml``, default ``/etc/xdg``, then
   ``/etc/uvm/config.toml``), the user file
   (``$XDG_CONFIG_HOME/uvm/config.toml``), then ``--config FILE``;
4. ``[domains."DOMAIN"]`` tables of those files, in the same order;
5. ``[repositories."FQRN"]`` tables of those files, in the same order;
6. environment variables named as in the stock client (``CVMFS_TIMEOUT`` ...).

More specific tables beat less specific ones before file order counts, as in
the stock client, where ``domain.d`` and ``config.d`` override
``default.local``.  The environment always wins, so a site's existing
``CVMFS_*`` settings just work.
"""

from __future__ import annotations

import os
import sys
from collections import namedtuple
from types import MappingProxyType

from uvm.errors import ConfigError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (3 ms of start-up)
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

# The records below are collections.namedtuple classes, not typing.NamedTuple
# ones (see Bind in uvm/sandbox/namespace.py): every template run loads the
# configuration, and typing plus the NamedTuple classes were 4-5 ms of a
# warm run's start.  The fields' types are written in each class.



# --- the settings table ----------------------------------------------------


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off", ""):
        return False
    raise ValueError(f"not a yes/no value: {text!r}")


class Setting(namedtuple("Setting", ("key", "env", "kind", "default", "doc", "per_repository"),
                          defaults=(True,))):
    """One setting: its TOML key, environment variable, type and default."""

    __slots__ = ()
    key: str
    env: Optional[str]
    kind: type
    default: Any
    doc: str
    per_repository: bool


SETTINGS: Tuple[Setting, ...] = (
    Setting("server_url", "CVMFS_SERVER_URL", str, "",
            "stratum-1 ring, ';'-separated; @fqrn@ and @org@ are replaced"),
    Setting("http_proxy", "CVMFS_HTTP_PROXY", str, "DIRECT",
            "proxy groups: ';' between groups, '|' within one; DIRECT = none"),
    Setting("fallback_proxy", "CVMFS_FALLBACK_PROXY", str, "",
            "extra proxy groups tried last; removes DIRECT"),
    Setting("timeout", "CVMFS_TIMEOUT", float, 5.0,
            "connect and low-speed time in seconds, through a proxy"),
    Setting("timeout_direct", "CVMFS_TIMEOUT_DIRECT", float, 10.0,
            "connect and low-speed time in seconds, without a proxy"),
    Setting("low_speed_limit", "CVMFS_LOW_SPEED_LIMIT", int, 1024,
            "bytes/s below which a transfer counts as stalled"),
    Setting("max_retries", "CVMFS_MAX_RETRIES", int, 1,
            "retries of a transfer error on the same proxy and mirror"),
    Setting("backoff_init", "CVMFS_BACKOFF_INIT", float, 2.0,
            "first retry waits up to this many seconds"),
    Setting("backoff_max", "CVMFS_BACKOFF_MAX", float, 10.0,
            "retry waits double up to this many seconds"),
    Setting("follow_redirects", "CVMFS_FOLLOW_REDIRECTS", bool, False,
            "follow up to 4 HTTP redirects"),
    Setting("host_reset_after", "CVMFS_HOST_RESET_AFTER", float, 1800.0,
            "seconds after a mirror failover before the first mirror is tried again"),
    Setting("proxy_reset_after", "CVMFS_PROXY_RESET_AFTER", float, 300.0,
            "seconds after a proxy failover before the first group is tried again"),
    Setting("parallel_downloads", "UVM_PARALLEL_DOWNLOADS", int, 16,
            "threads used to prefetch objects"),
    Setting("cache_base", "CVMFS_CACHE_BASE", str, "",
            "cache directory (default $XDG_CACHE_HOME/uvm); objects in <base>/shared",
            per_repository=False),
    Setting("quota_limit", "CVMFS_QUOTA_LIMIT", int, 4000,
            "cache size limit in MB; <= 0 means unmanaged", per_repository=False),
    Setting("max_ttl", "CVMFS_MAX_TTL", int, 0,
            "cap on the catalog TTL in minutes; 0 = the repository's TTL"),
    Setting("keys_dir", "CVMFS_KEYS_DIR", str, "",
            "directory of master public keys (*.pub); default: the shipped domain keys"),
    Setting("public_key", "CVMFS_PUBLIC_KEY", str, "",
            "':'-separated list of master public key files; beats keys_dir"),
    Setting("repository_tag", "CVMFS_REPOSITORY_TAG", str, "",
            "mount this named tag instead of the newest revision"),
    Setting("repository_date", "CVMFS_REPOSITORY_DATE", str, "",
            "mount the newest revision not later than YYYY-MM-DDTHH:MM:SSZ"),
    Setting("root_hash", "CVMFS_ROOT_HASH", str, "",
            "mount this root catalog hash; no history, no updates"),
)

SETTINGS_BY_KEY: Mapping[str, Setting] = MappingProxyType({s.key: s for s in SETTINGS})

_TABLES = ("repositories", "domains", "templates")


def _coerce(setting: Setting, value: Any, where: str) -> Any:
    """A TOML or environment value converted to the setting's type, or ConfigError."""
    try:
        if setting.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                return _parse_bool(value)
            raise ValueError(f"expected true/false, got {value!r}")
        if setting.kind is str:
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return ";".join(value)  # lists are a friendlier spelling of ';' rings
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {value!r}")
            return value.strip()
        if setting.kind in (int, float):
            if isinstance(value, bool):
                raise ValueError(f"expected a number, got {value!r}")
            if isinstance(value, str):
                value = value.strip()
            if setting.kind is int and isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(f"expected a whole number, got {value!r}")
            return setting.kind(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: bad value for {setting.key}: {err}") from None
    raise ConfigError(f"{where}: unsupported value for {setting.key}")  # pragma: no cover


# --- templates -------------------------------------------------------------


class Template(namedtuple("Template", ("name", "repository", "path", "binds", "env", "origin",
                                        "extra"),
                           defaults=("/", (), MappingProxyType({}), "", MappingProxyType({})))):
    """A named run environment: a repository path used as ``/`` plus binds and env.

    Parsed and kept here; ``uvm run --template`` interprets it.
    """

    __slots__ = ()
    name: str
    repository: str
    path: str
    binds: Tuple[str, ...]
    env: Mapping[str, str]
    origin: str
    extra: Mapping[str, Any]


def _parse_template(name: str, table: Any, where: str) -> Template:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [templates.{name}] must be a table")
    repository = table.get("repository")
    if not isinstance(repository, str) or not repository:
        raise ConfigError(f"{where}: [templates.{name}] needs repository = \"FQRN\"")
    path = table.get("path", "/")
    binds = table.get("binds", [])
    env = table.get("env", {})
    if not isinstance(path, str):
        raise ConfigError(f"{where}: templates.{name}.path must be a string")
    if not isinstance(binds, list) or not all(isinstance(b, str) for b in binds):
        raise ConfigError(f"{where}: templates.{name}.binds must be a list of strings")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise ConfigError(f"{where}: templates.{name}.env must be a table of strings")
    extra = {k: v for k, v in table.items() if k not in ("repository", "path", "binds", "env")}
    return Template(name, repository, path, tuple(binds), MappingProxyType(dict(env)),
                    where, MappingProxyType(extra))


# --- sources ---------------------------------------------------------------


class Layer(namedtuple("Layer", ("origin", "values"))):
    """Values from one place, for one scope (global, a domain or a repository)."""

    __slots__ = ()
    origin: str
    values: Mapping[str, Any]


class FileData(namedtuple("FileData", ("path", "top", "domains", "repositories", "templates"))):
    """One parsed TOML file."""

    __slots__ = ()
    path: str
    top: Mapping[str, Any]
    domains: Mapping[str, Mapping[str, Any]]
    repositories: Mapping[str, Mapping[str, Any]]
    templates: Mapping[str, Template]


def _check_keys(table: Mapping[str, Any], where: str) -> Dict[str, Any]:
    values = {}
    for key, value in table.items():
        setting = SETTINGS_BY_KEY.get(key)
        if setting is None:
            raise ConfigError(f"{where}: unknown setting {key!r}",
                              hint="see `uvm config show` for the known settings")
        values[key] = _coerce(setting, value, where)
    return values


def parse_toml(text: str, path: str) -> FileData:
    """Parse one configuration file's text (pure; ``path`` only names it in errors)."""
    # Imported here: most runs have no configuration file, and start-up counts.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.9/3.10 only
        import tomli as tomllib
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    top = {k: v for k, v in data.items() if k not in _TABLES}
    for key, value in top.items():
        if isinstance(value, dict):
            raise ConfigError(f"{path}: unknown table [{key}]",
                              hint="known tables: " + ", ".join(_TABLES))
    top_values = _check_keys(top, path)
    scoped: Dict[str, Dict[str, Mapping[str, Any]]] = {"domains": {}, "repositories": {}}
    for table_name in ("domains", "repositories"):
        tables = data.get(table_name, {})
        if not isinstance(tables, dict):
            raise ConfigError(f"{path}: {table_name} must be a table of tables")
        for name, table in tables.items():
            where = f'{path} [{table_name}."{name}"]'
            if not isinstance(table, dict):
                raise ConfigError(f"{where}: must be a table")
            values = _check_keys(table, where)
            for key in values:
                if not SETTINGS_BY_KEY[key].per_repository:
                    raise ConfigError(f"{where}: {key} applies to the whole cache, "
                                      "set it at the top level")
            scoped[table_name][name] = MappingProxyType(values)
    templates_table = data.get("templates", {})
    if not isinstance(templates_table, dict):
        raise ConfigError(f"{path}: templates must be a table of tables")
    templates = {
        name: _parse_template(name, table, f"{path} [templates.{name}]")
        for name, table in templates_table.items()
    }
    return FileData(path, MappingProxyType(top_values), MappingProxyType(scoped["domains"]),
                    MappingProxyType(scoped["repositories"]), MappingProxyType(templates))


def read_file(path: str) -> FileData:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read configuration file: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse_toml(text, path)


def system_config_paths(environ: Mapping[str, str]) -> List[str]:
    """System-wide files, least important first (``/etc/uvm``, then XDG_CONFIG_DIRS)."""
    paths = ["/etc/uvm/config.toml"]
    dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    for directory in reversed([d for d in dirs.split(":") if d]):
        paths.append(os.path.join(directory, "uvm", "config.toml"))  # first listed wins
    return list(dict.fromkeys(paths))


def user_config_path(environ: Mapping[str, str]) -> str:
    home = environ.get("HOME") or os.path.expanduser("~")
    user_dir = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    return os.path.join(user_dir, "uvm", "config.toml")


def config_file_paths(environ: Mapping[str, str]) -> List[str]:
    """System then user configuration files, following the XDG base-directory rules."""
    return system_config_paths(environ) + [user_config_path(environ)]


def _env_layer(environ: Mapping[str, str]) -> Layer:
    values = {}
    for setting in SETTINGS:
        if setting.env and setting.env in environ:
            values[setting.key] = _coerce(
                setting, environ[setting.env], f"environment {setting.env}")
    return Layer("environment", MappingProxyType(values))


def domain_of_name(fqrn: str, domains: Sequence[str]) -> Optional[str]:
    """The longest configured domain that ``fqrn`` belongs to, else its parent domain."""
    best = None
    for domain in domains:
        if fqrn.endswith("." + domain) and (best is None or len(domain) > len(best)):
            best = domain
    if best is None and "." in fqrn:
        best = fqrn.split(".", 1)[1]
    return best


# --- effective settings ----------------------------------------------------


class Value(namedtuple("Value", ("value", "origin"))):
    """An effective value and where it came from."""

    __slots__ = ()
    value: Any
    origin: str


class Settings(namedtuple("Settings", ("fqrn", "values"))):
    """Effective settings for one repository (or for none: the cache-wide view)."""

    __slots__ = ()
    fqrn: Optional[str]
    values: Mapping[str, Value]

    def __getattr__(self, key: str) -> Any:
        try:
            return self.values[key].value
        except KeyError:
            raise AttributeError(key) from None

    def origin(self, key: str) -> str:
        return self.values[key].origin

    def items(self) -> List[Tuple[str, Value]]:
        return [(s.key, self.values[s.key]) for s in SETTINGS]


def default_cache_base(environ: Mapping[str, str]) -> str:
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "uvm")


class Config(namedtuple("Config", ("files", "env", "environ", "templates", "builtin_domains"))):
    """Everything read from files and the environment; ask it for a repository's view."""

    __slots__ = ()
    files: Tuple[FileData, ...]
    env: Layer
    environ: Mapping[str, str]
    templates: Mapping[str, Template]
    builtin_domains: Callable[[str], Tuple[Optional[str], Mapping[str, Any]]]

    def layers(self, fqrn: Optional[str]) -> List[Layer]:
        """Every layer that applies to ``fqrn``, lowest precedence first."""
        layers = [Layer("default", MappingProxyType({s.key: s.default for s in SETTINGS}))]
        domain = None
        if fqrn:
            known = [d for f in self.files for d in f.domains]
            builtin_name, builtin = self.builtin_domains(fqrn)
            if builtin_name:
                known.append(builtin_name)
                layers.append(Layer(f"built-in domain {builtin_name}", builtin))
            domain = domain_of_name(fqrn, known)
        for f in self.files:
            layers.append(Layer(f.path, f.top))
        if domain:
            for f in self.files:
                if domain in f.domains:
                    layers.append(Layer(f'{f.path} [domains."{domain}"]', f.domains[domain]))
        if fqrn:
            for f in self.files:
                if fqrn in f.repositories:
                    layers.append(Layer(f'{f.path} [repositories."{fqrn}"]',
                                        f.repositories[fqrn]))
        layers.append(self.env)
        return layers

    def settings(self, fqrn: Optional[str] = None) -> Settings:
        """The effective settings for repository ``fqrn`` (or cache-wide if None)."""
        values: Dict[str, Value] = {}
        for layer in self.layers(fqrn):
            for key, value in layer.values.items():
                values[key] = Value(value, layer.origin)
        if not values["cache_base"].value:
            values["cache_base"] = Value(default_cache_base(self.environ),
                                         "default ($XDG_CACHE_HOME/uvm)")
        return Settings(fqrn, MappingProxyType(values))

    def repositories(self) -> List[str]:
        """Repositories named in any configuration file."""
        return sorted({name for f in self.files for name in f.repositories})


def _builtin_domains(fqrn: str) -> Tuple[Optional[str], Mapping[str, Any]]:
    from uvm.cvmfs.domains import builtin_settings

    return builtin_settings(fqrn)


def load(
    config_file: Optional[str] = None,
    environ: Optional[Mapping[str, str]] = None,
    system_files: Optional[Sequence[str]] = None,
) -> Config:
    """Read every configuration source once.

    ``environ`` defaults to ``os.environ``; tests pass their own mapping.
    ``system_files`` replaces the system-wide search (tests); the user file
    still comes from ``XDG_CONFIG_HOME``.  A missing system or user file is
    fine; a missing ``--config`` file is an error.
    """
    environ = dict(os.environ if environ is None else environ)
    system = list(system_files) if system_files is not None else system_config_paths(environ)
    candidates = system + [user_config_path(environ)]
    files = [read_file(p) for p in candidates if os.path.isfile(p)]
    if config_file:
        files.append(read_file(config_file))
    templates: Dict[str, Template] = {}
    for f in files:
        templates.update(f.templates)
    return Config(tuple(files), _env_layer(environ), MappingProxyType(environ),
                  MappingProxyType(templates), _builtin_domains)
