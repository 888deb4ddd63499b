"""Configuration layers: defaults < domains < files < tables < environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from uvm import config
from uvm.cvmfs.domains import keys_dir, public_key_files
from uvm.errors import ConfigError


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


@pytest.fixture
def xdg(tmp_path):
    env = {"HOME": str(tmp_path / "home"),
           "XDG_CONFIG_HOME": str(tmp_path / "user"),
           "XDG_CONFIG_DIRS": str(tmp_path / "sys1") + ":" + str(tmp_path / "sys2")}
    return tmp_path, env


def test_defaults_and_builtin_domain_need_no_configuration(xdg):
    _, env = xdg
    cfg = config.load(environ=env, system_files=[])
    s = cfg.settings("sft.cern.ch")
    assert "cvmfs-stratum-one.cern.ch/cvmfs/@fqrn@" in s.server_url
    assert s.origin("server_url") == "built-in domain cern.ch"
    assert s.http_proxy == "DIRECT" and s.origin("http_proxy") == "default"
    assert s.timeout == 5.0 and s.max_retries == 1 and s.quota_limit == 4000
    assert s.cache_base == os.path.join(env["HOME"], ".cache", "uvm")
    keys = public_key_files(s.public_key, s.keys_dir, "sft.cern.ch")
    assert len(keys) == 3 and all(k.startswith(keys_dir("cern.ch")) for k in keys)
    assert cfg.settings("x.egi.eu").server_url.startswith("http://cvmfs-egi.gridpp.rl.ac.uk")
    assert cfg.settings("unknown.example.org").server_url == ""


def test_precedence_system_user_cli_then_environment(xdg):
    tmp, env = xdg
    write(tmp / "sys2" / "uvm" / "config.toml", 'timeout = 1\nmax_retries = 5\nquota_limit = 10\n')
    write(tmp / "sys1" / "uvm" / "config.toml", 'timeout = 2\n')
    write(tmp / "user" / "uvm" / "config.toml", 'timeout = 3\nbackoff_init = 0.5\n')
    cli = write(tmp / "cli.toml", 'backoff_init = 0.25\nhttp_proxy = ["a:1|b:1", "DIRECT"]\n')
    env["CVMFS_MAX_RETRIES"] = "7"
    cfg = config.load(cli, environ=env)
    s = cfg.settings()
    assert s.timeout == 3.0 and s.origin("timeout").startswith(str(tmp / "user"))
    assert s.max_retries == 7 and s.origin("max_retries") == "environment"
    assert s.backoff_init == 0.25 and s.origin("backoff_init") == cli
    assert s.http_proxy == "a:1|b:1;DIRECT"
    assert s.quota_limit == 10 and "sys2" in s.origin("quota_limit")
    # XDG_CONFIG_DIRS: the first directory listed is the most important
    assert [f.path for f in cfg.files].index(str(tmp / "sys1" / "uvm" / "config.toml")) > \
        [f.path for f in cfg.files].index(str(tmp / "sys2" / "uvm" / "config.toml"))


def test_domain_and_repository_tables(xdg):
    tmp, env = xdg
    write(tmp / "user" / "uvm" / "config.toml", '''
server_url = "http://global/cvmfs/@fqrn@"
[domains."cern.ch"]
http_proxy = "http://squid.cern.ch:3128"
timeout = 9
[repositories."sft.cern.ch"]
timeout = 4
server_url = ["http://m1/cvmfs/@fqrn@", "http://m2/cvmfs/@fqrn@"]
[templates.slc4]
repository = "sft.cern.ch"
path = "/os/slc4"
binds = ["/home"]
env = { LANG = "C" }
''')
    cfg = config.load(environ=env, system_files=[])
    sft = cfg.settings("sft.cern.ch")
    assert sft.timeout == 4.0 and "repositories" in sft.origin("timeout")
    assert sft.server_url == "http://m1/cvmfs/@fqrn@;http://m2/cvmfs/@fqrn@"
    assert sft.http_proxy == "http://squid.cern.ch:3128" and "domains" in sft.origin("http_proxy")
    atlas = cfg.settings("atlas.cern.ch")
    assert atlas.timeout == 9.0
    assert atlas.server_url == "http://global/cvmfs/@fqrn@"  # a file beats built-in data
    other = cfg.settings("x.example.org")
    assert other.timeout == 5.0 and other.http_proxy == "DIRECT"
    env["CVMFS_TIMEOUT"] = "1.5"
    assert config.load(environ=env, system_files=[]).settings("sft.cern.ch").timeout == 1.5
    t = cfg.templates["slc4"]
    assert (t.repository, t.path, t.binds, dict(t.env)) == (
        "sft.cern.ch", "/os/slc4", ("/home",), {"LANG": "C"})


@pytest.mark.parametrize("text, needle", [
    ("timeoutt = 3\n", "unknown setting 'timeoutt'"),
    ("timeout = 'soon'\n", "timeout"),
    ("[mystery]\nx = 1\n", "unknown table [mystery]"),
    ('[repositories."a.b"]\nquota_limit = 3\n', "whole cache"),
    ("[templates.t]\npath = '/'\n", "needs repository"),
    ("timeout = \n", "not valid TOML"),
])
def test_errors_name_file_and_key(xdg, text, needle):
    tmp, env = xdg
    path = write(tmp / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        config.load(path, environ=env, system_files=[])
    assert path in str(info.value) and needle in str(info.value)


def test_bad_environment_value_names_the_variable(xdg):
    _, env = xdg
    env["CVMFS_FOLLOW_REDIRECTS"] = "perhaps"
    with pytest.raises(ConfigError, match="CVMFS_FOLLOW_REDIRECTS"):
        config.load(environ=env, system_files=[])
    env["CVMFS_FOLLOW_REDIRECTS"] = "yes"
    assert config.load(environ=env, system_files=[]).settings().follow_redirects is True


def test_missing_config_option_file_is_an_error(xdg):
    tmp, env = xdg
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(str(tmp / "nope.toml"), environ=env, system_files=[])


def test_public_key_beats_keys_dir(tmp_path):
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "a.pub").write_text("x")
    assert public_key_files("", str(tmp_path / "k")) == [str(tmp_path / "k" / "a.pub")]
    assert public_key_files("/x.pub:/y.pub", str(tmp_path / "k")) == ["/x.pub", "/y.pub"]


def test_config_show_cli_says_where_values_come_from(tmp_path):
    cfg = write(tmp_path / "c.toml", '[repositories."sft.cern.ch"]\ntimeout = 4\n')
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "none"),
               XDG_CONFIG_DIRS=str(tmp_path / "none"), CVMFS_HTTP_PROXY="http://squid:3128")
    result = subprocess.run(
        [sys.executable, "-m", "uvm", "--config", cfg, "config", "show", "--repo", "sft.cern.ch"],
        capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    lines = {line.split(" = ")[0]: line for line in result.stdout.splitlines() if " = " in line}
    assert "repositories" in lines["timeout"] and "4.0" in lines["timeout"]
    assert "environment" in lines["http_proxy"]
    assert "built-in domain cern.ch" in lines["server_url"]
    assert "# mirrors: http://cvmfs-stratum-one.cern.ch/cvmfs/sft.cern.ch" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "uvm", "--config", str(tmp_path / "missing"),
                          "config", "show"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
