"""What a program will read next, known before it asks.

A cold start waits one round trip per file it opens one after another.  The
ELF loader's files are known from the program (``elfdeps``); these are the
other programs whose next files uvm can tell in advance (pure functions;
``materialize`` fetches, ``dispatch`` reads a command line at exec):

- **CPython's start** (:func:`start_set`), from the program's name alone:
  it imports ``encodings``, then its aliases, then the codec of the locale,
  then ``sitecustomize``, then what the ``.pth`` files of its site
  directories import, each module only once the one before has run; the
  same on every start of a given version.  Fetched while the interpreter
  itself downloads, its module directories made meanwhile.
- **A link** (:func:`linker_inputs`): ld opens the files its command line
  names, and then those its linker scripts (``libc.so``) name.
- **A compile** (:func:`compile_plan`, :func:`include_candidates`): gcc's
  compiler proper reads its source, then each header its ``#include``
  lines name, level after level; one wave per level instead of one round
  trip per header.

Everything here is a candidate: what the revision does not have is skipped,
so a name some build lacks costs a catalog lookup, nothing more; an
``#include`` under a false conditional costs a small download.  A template's
own ``.uvm-prefetch`` list (``docs/templates.md``) covers what this does
not know.
"""

from __future__ import annotations

import re
from collections import namedtuple

TYPE_CHECKING = False  # as typing.TYPE_CHECKING: the tracer imports this module, not typing
if TYPE_CHECKING:
    from typing import List, Optional, Sequence, Tuple

    Alternatives = Tuple[str, ...]  # the first of these the revision has is the one read

# Modules CPython 3 imports from files on every start (measured on 3.11);
# before 3.11, os, site, codecs and the others below were not yet frozen into
# the interpreter and were read from files too.
_PY3_ALWAYS = ("encodings/__init__", "encodings/aliases", "encodings/utf_8", "sitecustomize")
_PY3_BEFORE_311 = ("abc", "codecs", "io", "os", "stat", "posixpath", "genericpath",
                   "_collections_abc", "_sitebuiltins", "site", "_bootlocale",
                   "encodings/latin_1")
_PY2 = ("encodings/__init__", "encodings/aliases", "encodings/utf_8", "encodings/ascii",
        "codecs", "os", "posixpath", "stat", "genericpath", "UserDict", "copy_reg", "types",
        "warnings", "linecache", "abc", "_abcoll", "_weakrefset", "site", "sysconfig",
        "sitecustomize")

_LINKERS = frozenset({"ld", "ld.bfd", "ld.gold", "collect2"})  # also with a target prefix
# options whose next argument is no file the link reads
_NOT_INPUTS = frozenset({"-o", "--output", "-L", "-rpath", "-rpath-link", "-dynamic-linker",
                         "--dynamic-linker", "-soname", "-h", "-Map", "-z", "-m", "-e"})

StartSet = namedtuple("StartSet", "files dirs site_dirs pth_codec cache_tag")
StartSet.__doc__ = """Paths from the program's root: ``files`` to fetch (lists of
alternatives), ``dirs`` to make whole (the interpreter lists them),
``site_dirs`` whose ``.pth`` files are read with ``pth_codec`` (their codec
in the C locale, ASCII) and what they import fetched, ``cache_tag``
(``cpython-311``; None where compiled modules sit by their source)."""


def start_set(program: str) -> Optional[StartSet]:
    """The start set of the program at ``program`` (a path from its root,
    symlinks resolved: ``/usr/bin/python3.11``), or None when uvm knows none."""
    head, _, name = program.rpartition("/")
    match = re.fullmatch(r"python([23])\.([0-9]+)", name)
    if match is None or not head.endswith("/bin"):
        return None
    major, minor = int(match.group(1)), int(match.group(2))
    prefix = head[:-len("/bin")]
    version = f"{major}.{minor}"
    lib = f"{prefix}/lib/python{version}"
    tag = f"cpython-{major}{minor}" if major == 3 else None
    if major == 3:
        modules = _PY3_ALWAYS + (_PY3_BEFORE_311 if minor < 11 else ())
    else:
        modules = _PY2
    files = [module_files(lib, module, tag) for module in modules]
    files.append(("/etc/localtime",))  # the time zone, read by the interpreter's start
    site_dirs = [f"{lib}/site-packages", f"{prefix}/local/lib/python{version}/dist-packages",
                 f"{prefix}/lib/python{major}/dist-packages"]
    dirs = [f"{prefix}/lib/", f"{lib}/", f"{lib}/encodings/", f"{lib}/lib-dynload/"]
    return StartSet(files, dirs + [d + "/" for d in site_dirs], site_dirs,
                    module_files(lib, "encodings/ascii", tag), tag)


def module_files(where: str, module: str, cache_tag: Optional[str]) -> Alternatives:
    """Where the start reads ``module`` (``encodings/utf_8``, or a package's
    name) below ``where``: its compiled form, else its source."""
    package, _, name = module.rpartition("/")
    base = f"{where}/{package}" if package else where
    if cache_tag is None:
        return (f"{base}/{name}.pyc", f"{base}/{name}.py",
                f"{base}/{name}/__init__.pyc", f"{base}/{name}/__init__.py")
    return (f"{base}/__pycache__/{name}.{cache_tag}.pyc", f"{base}/{name}.py",
            f"{base}/{name}/__pycache__/__init__.{cache_tag}.pyc", f"{base}/{name}/__init__.py")


def pth_imports(data: bytes) -> List[str]:
    """The top-level modules the import lines of a ``.pth`` file import, as
    far as they can be read without running them (``site`` executes a line
    that starts with ``import``; other lines are paths)."""
    names: List[str] = []
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not (line.startswith("import ") or line.startswith("import\t")):
            continue
        for statement in line.split(";"):
            found = re.fullmatch(r"import\s+([\w.]+(?:\s*,\s*[\w.]+)*)", statement.strip())
            if found:
                names.extend(n.strip().split(".")[0] for n in found.group(1).split(","))
        names.extend(n.split(".")[0]
                     for n in re.findall(r"""__import__\(\s*['"]([\w.]+)['"]""", line))
    return list(dict.fromkeys(names))


def is_linker(program: str) -> bool:
    """Whether ``program`` (a path) is a GNU-style linker or gcc's collect2."""
    return program.rpartition("/")[2].rpartition("-")[2] in _LINKERS


def linker_dirs(argv: Sequence[str]) -> List[str]:
    """The ``-L`` directories of a linker's command line, in order (absolute ones)."""
    dirs = []
    for option, value in zip(argv, list(argv[1:]) + [""]):
        if option.startswith("-L/"):
            dirs.append(option[2:])
        elif option == "-L" and value.startswith("/"):
            dirs.append(value)
    return dirs


def linker_inputs(argv: Sequence[str]) -> List[Alternatives]:
    """The files a linker's command line makes it read, in its order: every
    absolute path that is not an output, and each ``-lNAME`` as ld searches
    it, ``libNAME.so`` then ``libNAME.a`` (``.a`` alone after ``-Bstatic``)
    in each ``-L`` directory in turn.  A cold link opens them one after
    another (gcc's start files, ``libgcc``, ``libc``, and every ``-l`` of a
    build against a software repository)."""
    dirs = linker_dirs(argv)
    wanted: List[Alternatives] = []
    static = False
    skip = True  # argv[0], the program
    for arg in argv:
        if skip:
            skip = False
        elif arg in _NOT_INPUTS:
            skip = True
        elif arg in ("-Bstatic", "-static", "-dn", "-non_shared"):
            static = True
        elif arg in ("-Bdynamic", "-dy", "-call_shared"):
            static = False
        elif arg.startswith("-l") and len(arg) > 2:
            wanted.append(_library(arg[2:], dirs, static))
        elif arg.startswith("/"):
            wanted.append((arg,))
    return [alternatives for alternatives in dict.fromkeys(wanted) if alternatives]


def linker_script_inputs(data: bytes, script_dir: str, dirs: Sequence[str]) -> List[Alternatives]:
    """What a GNU ld script makes the link read next (``libc.so`` is one,
    naming ``libc.so.6`` and ``libc_nonshared.a``): the files of its
    ``GROUP`` and ``INPUT`` commands, a bare name looked for next to the
    script, then in the ``-L`` directories; none if ``data`` is no script."""
    if data[:4] == b"\x7fELF" or data[:8] == b"!<arch>\n":
        return []
    try:
        text = re.sub(r"/\*.*?\*/", " ", data.decode("ascii"), flags=re.S)
    except UnicodeDecodeError:
        return []
    wanted: List[Alternatives] = []
    for body in re.findall(r"\b(?:GROUP|INPUT)\s*\(((?:[^()]|\([^()]*\))*)\)", text):
        for token in re.split(r"[\s(),]+", body):
            if not token or token == "AS_NEEDED":
                continue
            if token.startswith("-l") and len(token) > 2:
                wanted.append(_library(token[2:], dirs, False))
            elif token.startswith("/"):
                wanted.append((token,))
            else:
                wanted.append((f"{script_dir}/{token}",) + tuple(f"{d}/{token}" for d in dirs))
    return [alternatives for alternatives in dict.fromkeys(wanted) if alternatives]


def _library(name: str, dirs: Sequence[str], static: bool) -> Alternatives:
    """Where ld finds ``-lNAME`` (``-l:FILE`` names the file itself)."""
    if name.startswith(":"):
        return tuple(f"{d}/{name[1:]}" for d in dirs)
    kinds = ("a",) if static else ("so", "a")
    return tuple(f"{d}/lib{name}.{kind}" for d in dirs for kind in kinds)


_COMPILERS = frozenset({"cc1", "cc1plus", "cc1obj", "cc1objplus"})  # gcc's compilers proper
_CXX = frozenset({"cc1plus", "cc1objplus"})
_SOURCE_SUFFIXES = (".c", ".cc", ".cp", ".cpp", ".cxx", ".c++", ".C", ".m", ".mm", ".h", ".hh",
                    ".hpp", ".hxx", ".i", ".ii")
# options of cc1 whose next argument is a value (the ones naming directories apart)
_COMPILER_VALUES = frozenset({"-o", "-dumpdir", "-dumpbase", "-dumpbase-ext", "-auxbase",
                              "-auxbase-strip", "-imultiarch", "-iprefix", "-isysroot", "-D", "-U",
                              "-MF", "-MT", "-MQ", "-MD", "-MMD", "-main-file-name", "-imacros",
                              "-iwithprefix", "-iwithprefixbefore", "-x", "-A"})

CompilePlan = namedtuple("CompilePlan", "sources quote_dirs dirs standard")
CompilePlan.__doc__ = """A compile's ``sources`` (and ``-include`` files), the
``-iquote`` directories, the search path of ``#include <...>`` in order
(``-I``, ``-isystem``, the compiler's standard directories, ``-idirafter``)
and those ``standard`` directories alone."""


def is_compiler(program: str) -> bool:
    """Whether ``program`` (a path) is gcc's compiler proper (``cc1``, ``cc1plus``)."""
    return program.rpartition("/")[2] in _COMPILERS


def compile_plan(program: str, argv: Sequence[str], cwd: str) -> CompilePlan:
    """What the command line of gcc's compiler proper at ``program`` says
    about the files it reads (relative paths from guest directory ``cwd``).
    The standard directories are where Debian's and Red Hat's gcc look:
    ``<gcc>/include`` and ``include-fixed`` next to the compiler,
    ``/usr/local/include``, ``<prefix>/include/<multiarch>`` and
    ``<prefix>/include``; for C++, ``<prefix>/include/c++/<version>`` (and
    its ``<multiarch>`` and ``backward`` variants) first."""
    def absolute(path: str) -> str:
        return path if path.startswith("/") else f"{cwd.rstrip('/')}/{path}"

    gcc_dir = program.rpartition("/")[0]
    version = gcc_dir.rpartition("/")[2]
    prefix = gcc_dir.rsplit("/", 4)[0] if gcc_dir.count("/") >= 4 else "/usr"
    sources: List[str] = []
    named = {"-I": [], "-iquote": [], "-isystem": [], "-idirafter": [], "-include": sources}
    multiarch = ""
    standard = True
    value_of = ""
    for arg in argv[1:]:
        if value_of:
            if value_of == "-imultiarch":
                multiarch = arg
            elif value_of in named:
                named[value_of].append(absolute(arg))
            value_of = ""
        elif arg in _COMPILER_VALUES or arg in named:
            value_of = arg
        elif arg.startswith("-I") and len(arg) > 2:
            named["-I"].append(absolute(arg[2:]))
        elif arg == "-nostdinc":
            standard = False
        elif not arg.startswith("-") and arg.endswith(_SOURCE_SUFFIXES):
            sources.append(absolute(arg))
    builtin: List[str] = []
    if standard:
        arch = [f"{prefix}/include/{multiarch}"] if multiarch else []
        if program.rpartition("/")[2] in _CXX:
            cxx = f"{prefix}/include/c++/{version}"
            builtin += [cxx] + [f"{d}/c++/{version}" for d in arch] + [f"{cxx}/backward"]
        builtin += [f"{gcc_dir}/include", "/usr/local/include", f"{gcc_dir}/include-fixed",
                    *arch, f"{prefix}/include"]
    searched = named["-I"] + named["-isystem"] + builtin + named["-idirafter"]
    return CompilePlan(sources, named["-iquote"], list(dict.fromkeys(searched)), builtin)


def include_candidates(plan: CompilePlan, path: str, data: bytes,
                       on_host: bool = False) -> List[Alternatives]:
    """Where each ``#include`` of the file at ``path`` may be found, in the
    compiler's order (a quoted name first next to the file, then in the
    ``-iquote`` directories; ``#include_next`` in the directories after the
    one holding the file).  Every ``#include`` line counts, whatever
    conditional it stands in: some of these are never read.  A system
    header of the host (``on_host``, in a standard directory: a compile on
    a worker node's own gcc) leads to no repository and is not followed."""
    if on_host and any(path.startswith(d + "/") for d in plan.standard):
        return []
    here = path.rpartition("/")[0]
    wanted: List[Alternatives] = []
    for directive, quote, name in re.findall(
            rb'^[ \t]*#[ \t]*(include|include_next|import)[ \t]*([<"])([^>"\n]+)[>"]', data,
            flags=re.M):
        name = name.decode("utf-8", "surrogateescape").strip()
        if name.startswith("/"):
            wanted.append((name,))
            continue
        dirs = plan.dirs
        if directive == b"include_next":
            holding = [i for i, d in enumerate(dirs) if path.startswith(d + "/")]
            if holding:  # the longest directory holding the file is the one it was found in
                dirs = dirs[max(holding, key=lambda i: len(dirs[i])) + 1:]
        elif quote == b'"':
            dirs = [here] + plan.quote_dirs + dirs
        wanted.append(tuple(f"{d}/{name}" for d in dirs))
    return [alternatives for alternatives in dict.fromkeys(wanted) if alternatives]
