"""Interpreter start sets: what a cold CPython start is given before it asks.

The set is checked against what the machine's own CPython really opens when
it starts (strace), so that it stays true to the interpreter the template
tests run; the other versions' layouts are checked by their paths.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from uvm.sandbox.startsets import (compile_plan, include_candidates, is_compiler, is_linker,
                                   linker_dirs, linker_inputs, linker_script_inputs, module_files,
                                   pth_imports, start_set)

PYTHON = os.path.realpath("/usr/bin/python3")  # Debian's, as in the templates the tests publish


def _opened_by_a_start(program: str, tmp_path) -> set:
    trace = tmp_path / "trace"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,open", "-e", "status=successful",
                    "-o", str(trace), program, "-c", "pass"],
                   check=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    return set(re.findall(r'open(?:at)?\((?:AT_FDCWD, )?"([^"]+)"', trace.read_text()))


def test_every_module_a_real_start_reads_is_in_its_set(tmp_path):
    """Its modules, its .pth files and what they import (here setuptools'
    distutils-precedence.pth), the time zone, its module directories."""
    known = start_set(PYTHON)
    assert known is not None
    candidates = {name for alternatives in known.files for name in alternatives}
    for site in known.site_dirs:
        for pth in (Path(site).glob("*.pth") if os.path.isdir(site) else ()):
            candidates.add(str(pth))
            candidates.update(name for module in pth_imports(pth.read_bytes())
                              for name in module_files(site, module, known.cache_tag))
    opened = _opened_by_a_start(PYTHON, tmp_path)
    read = {p for p in opened if p.endswith((".pyc", ".py", ".pth"))}
    assert any(p.endswith(".pyc") for p in read), opened  # compiled modules, from files
    assert read <= candidates, read - candidates
    assert "/etc/localtime" in opened and ("/etc/localtime",) in known.files
    prefix = os.path.dirname(os.path.dirname(PYTHON))
    version = os.path.basename(PYTHON)[len("python"):]
    assert f"{prefix}/lib/python{version}/" in known.dirs
    assert f"{prefix}/lib/python{version}/encodings/" in known.dirs


def test_older_versions_read_their_own_layouts():
    py310 = start_set("/opt/py/bin/python3.10")
    assert py310 is not None
    first = {alternatives[0] for alternatives in py310.files}
    assert "/opt/py/lib/python3.10/__pycache__/os.cpython-310.pyc" in first
    assert "/opt/py/lib/python3.10/encodings/__pycache__/utf_8.cpython-310.pyc" in first
    assert "/opt/py/lib/python3.10/encodings/" in py310.dirs
    py311 = start_set("/usr/bin/python3.11")
    assert py311 is not None and not any("/os." in p for a in py311.files for p in a)  # frozen
    py23 = start_set("/usr/bin/python2.3")  # Scientific Linux 4
    assert py23 is not None and py23.cache_tag is None
    assert ("/usr/lib/python2.3/os.pyc", "/usr/lib/python2.3/os.py") == py23.files[5][:2]
    assert "/usr/lib/python2.3/encodings/__init__.pyc" in {a[0] for a in py23.files}
    assert not any("__pycache__" in p for a in py23.files for p in a)


def test_pth_import_lines_name_their_modules():
    pth = (b"# a comment\n/opt/extra/lib\nimport os; var = 'X'; enabled = True; "
           b"enabled and __import__('_distutils_hack').add_shim(); \n"
           b"import a.b, c\nimportant/path\n")
    assert pth_imports(pth) == ["os", "_distutils_hack", "a", "c"]
    assert pth_imports(b"\xff\xfe not text\n") == []


@pytest.mark.parametrize("program", ["/usr/bin/python3", "/usr/bin/bash", "/usr/bin/python3.11-config",
                                     "/srv/python3.11", "python3.11", "/usr/bin/xpython3.11"])
def test_other_programs_have_no_set(program):
    assert start_set(program) is None


def _first_existing(alternatives) -> str:
    return next((p for p in map(os.path.normpath, alternatives) if os.path.isfile(p)), "")


def test_a_real_link_reads_what_its_command_line_names(tmp_path):
    """gcc's link, as collect2 is given it: what uvm would fetch is read by
    the link (nothing more), and covers the start files, libgcc and libc."""
    src = tmp_path / "hello.c"
    src.write_text("int main(void) { return 0; }\n")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    plan = subprocess.run(["gcc", "-###", "-o", str(tmp_path / "hello"), str(src)], env=env,
                          stderr=subprocess.PIPE, text=True, check=True).stderr
    (link,) = [shlex.split(line) for line in plan.splitlines() if "collect2" in line]
    assert is_linker(link[0])
    predicted = {p for p in map(_first_existing, linker_inputs(link)) if p}
    for script in [p for p in predicted if os.path.getsize(p) <= 4096]:  # libc.so, libgcc_s.so
        with open(script, "rb") as handle:
            named = linker_script_inputs(handle.read(), os.path.dirname(script), linker_dirs(link))
        predicted |= {p for p in map(_first_existing, named) if p}
    trace = tmp_path / "trace"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,open", "-e", "status=successful",
                    "-o", str(trace), "gcc", "-o", str(tmp_path / "hello"), str(src)],
                   check=True, cwd=tmp_path, env=env)
    opened = {os.path.normpath(p) for p in
              re.findall(r'open(?:at)?\((?:AT_FDCWD, )?"([^"]+)"', trace.read_text())}
    assert predicted <= opened, predicted - opened
    names = {os.path.basename(p) for p in predicted}
    assert {"Scrt1.o", "crti.o", "crtbeginS.o", "crtendS.o", "crtn.o", "libgcc.a",
            "libc.so", "liblto_plugin.so", "libc_nonshared.a", "libgcc_s.so.1"} <= names, names
    assert (str(tmp_path / "hello"),) not in linker_inputs(link)  # the output is not read


def test_linker_command_lines():
    argv = ["ld", "-plugin", "/p.so", "-o", "/out", "-L/a", "-L", "/b", "/crt1.o", "-lgcc",
            "-Bstatic", "-lm", "-l:libx.a", "-Bdynamic", "-lc", "-lgcc", "-dynamic-linker",
            "/lib64/ld.so", "rel.o", "-T", "/script.ld"]
    assert linker_inputs(argv) == [
        ("/p.so",), ("/crt1.o",),
        ("/a/libgcc.so", "/a/libgcc.a", "/b/libgcc.so", "/b/libgcc.a"),
        ("/a/libm.a", "/b/libm.a"), ("/a/libx.a", "/b/libx.a"),
        ("/a/libc.so", "/a/libc.a", "/b/libc.so", "/b/libc.a"), ("/script.ld",)]
    for program in ("/usr/bin/ld", "/usr/bin/x86_64-linux-gnu-ld.bfd", "/opt/ld.gold",
                    "/usr/lib/gcc/x86_64-linux-gnu/12/collect2"):
        assert is_linker(program), program
    for program in ("/usr/bin/ldd", "/usr/bin/ldconfig", "/usr/bin/gold", "/usr/bin/old"):
        assert not is_linker(program), program


def test_linker_scripts():
    libc = (b"/* GNU ld script\n   Use the shared library.  */\nOUTPUT_FORMAT(elf64-x86-64)\n"
            b"GROUP ( /lib/libc.so.6 /usr/lib/libc_nonshared.a  AS_NEEDED ( /lib64/ld.so.2 ) )\n")
    assert linker_script_inputs(libc, "/usr/lib", ["/L"]) == [
        ("/lib/libc.so.6",), ("/usr/lib/libc_nonshared.a",), ("/lib64/ld.so.2",)]
    assert linker_script_inputs(b"GROUP ( libgcc_s.so.1 -lgcc )\nINPUT(-l:x.a)", "/gcc",
                                ["/L1", "/L2"]) == [
        ("/gcc/libgcc_s.so.1", "/L1/libgcc_s.so.1", "/L2/libgcc_s.so.1"),
        ("/L1/libgcc.so", "/L1/libgcc.a", "/L2/libgcc.so", "/L2/libgcc.a"),
        ("/L1/x.a", "/L2/x.a")]
    for not_a_script in (b"\x7fELF\x02\x01GROUP(/x)", b"!<arch>\nGROUP(/x)", b"\xffGROUP(/x)",
                         b"/* GROUP ( /commented ) */", b"int main(void) { return 0; }"):
        assert linker_script_inputs(not_a_script, "/d", ["/L"]) == [], not_a_script
    assert linker_dirs(["ld", "-L/a", "-L", "/b", "-L", "rel", "-L/c", "-L"]) == ["/a", "/b", "/c"]


def _followed(plan) -> set:
    """What uvm fetches for a compile, following includes as materialize does."""
    seen: set = set()
    wanted = [(source,) for source in plan.sources]
    while wanted:
        found = [_first_existing(alternatives) for alternatives in wanted]
        wanted = []
        for path in found:
            if path and path not in seen:
                seen.add(path)
                with open(path, "rb") as handle:
                    wanted.extend(include_candidates(plan, path, handle.read()))
    return seen


@pytest.mark.parametrize("driver, source", [
    ("gcc", '#include <stdio.h>\n#include <math.h>\n#include "local.h"\n'
            'int main(void) { printf("%f\\n", sqrt(2.0)); return half(); }\n'),
    ("g++", "#include <vector>\n#include <iostream>\n#include <string>\n"
            "int main() { std::vector<std::string> v{\"a\"}; std::cout << v[0]; }\n"),
])
def test_a_real_compile_reads_only_headers_its_includes_name(tmp_path, driver, source):
    """Every header gcc's compiler proper opens is among what uvm fetches by
    following #include lines from the source through the search path the
    command line and the compiler's place give."""
    src = tmp_path / ("hello.c" if driver == "gcc" else "hello.cpp")
    src.write_text(source)
    (tmp_path / "local.h").write_text("#include <stdlib.h>\nstatic int half(void) { return 0; }\n")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    plan_text = subprocess.run([driver, "-###", "-c", src.name], env=env, cwd=tmp_path,
                               stderr=subprocess.PIPE, text=True, check=True).stderr
    (argv,) = [words for words in map(shlex.split, plan_text.splitlines())
               if words and words[0].endswith(("/cc1", "/cc1plus"))]
    assert is_compiler(argv[0]) and not is_linker(argv[0])
    plan = compile_plan(argv[0], argv, str(tmp_path))
    assert plan.sources == [str(src)]
    followed = _followed(plan)
    trace = tmp_path / "trace"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,open", "-e", "status=successful",
                    "-o", str(trace), driver, "-c", src.name, "-o", "hello.o"],
                   check=True, cwd=tmp_path, env=env)
    opened = {os.path.normpath(os.path.join(tmp_path, p)) for p in
              re.findall(r'open(?:at)?\((?:AT_FDCWD, )?"([^"]+)"', trace.read_text())}
    headers = {p for p in opened if p.endswith(".h") or "/c++/" in p}
    assert len(headers) > 20 and headers <= followed, headers - followed
    assert len(followed) < 2 * len(headers)  # lines under conditionals cost some, not all


def test_include_lines_and_search_order():
    plan = compile_plan("/usr/lib/gcc/x86_64-linux-gnu/12/cc1plus",
                        ["cc1plus", "-quiet", "-I", "inc", "-Iabs/../x", "-isystem", "/sys",
                         "-idirafter", "/late", "-iquote", "/q", "-imultiarch", "x86_64-linux-gnu",
                         "-include", "/pre.h", "main.cpp", "-o", "/tmp/out.s", "-dumpbase",
                         "main.cpp"], "/work")
    assert plan.sources == ["/pre.h", "/work/main.cpp"]
    assert plan.quote_dirs == ["/q"]
    assert plan.dirs == ["/work/inc", "/work/abs/../x", "/sys", "/usr/include/c++/12",
                         "/usr/include/x86_64-linux-gnu/c++/12", "/usr/include/c++/12/backward",
                         "/usr/lib/gcc/x86_64-linux-gnu/12/include", "/usr/local/include",
                         "/usr/lib/gcc/x86_64-linux-gnu/12/include-fixed",
                         "/usr/include/x86_64-linux-gnu", "/usr/include", "/late"]
    assert plan.standard == plan.dirs[3:-1]
    assert include_candidates(plan, "/usr/include/stdio.h", b"#include <x.h>", on_host=True) == []
    assert include_candidates(plan, "/work/inc/a.h", b"#include <x.h>", on_host=True) != []
    bare = compile_plan("/opt/gcc/lib/gcc/t/9/cc1", ["cc1", "-nostdinc", "-I/i", "a.c"], "/")
    assert bare.dirs == ["/i"] and bare.sources == ["/a.c"] and bare.standard == []
    source = (b'#include <a.h>\n  #  include "b.h"\n#if 0\n#include_next <c.h>\n#endif\n'
              b'#include MACRO\n#include </abs.h>\n// #include <not.h> is text\n')
    assert include_candidates(bare, "/i/sub/x.h", source) == [  # include_next: no dir after /i
        ("/i/a.h",), ("/i/sub/b.h", "/i/b.h"), ("/abs.h",)]
    assert include_candidates(plan, "/usr/include/c++/12/cstdlib", b"#include_next <stdlib.h>") \
        == [tuple(f"{d}/stdlib.h" for d in plan.dirs[4:])]
