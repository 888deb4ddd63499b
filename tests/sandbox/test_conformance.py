"""Conformance: CPython's own regression tests give the same results under uvm.

``python3 -m test --junit-xml`` runs ``test_os``, ``test_posix``,
``test_shutil`` and ``test_stat`` (Debian's libpython3.11-testsuite, copied
into host_root, and bound into the Debian root) twice per identity: under native chroot (the baseline: same
interpreter, same root, /dev /proc /sys of the host, the same scratch dir
bound at /mnt as TMPDIR) and under ``uvm run --root``.  Every test's outcome
(passed, failed, error, skipped) must be the same, except for the differences
listed in ``EXPECTED_DIFFERENCES`` with the reason for each.  As the test user
the baseline is native chroot with ``--userspec`` (root-only tests skip in
both).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import guest_env

pytestmark = pytest.mark.usefixtures("uvm_available")

MODULES = ["test_os", "test_posix", "test_shutil", "test_stat"]

# (mode, test id) -> why uvm's outcome differs from native chroot's; mode is
# "root", "user" or "*".  Every entry is a documented limitation (see
# docs/syscalls.md) or a property of the baseline, never a silent bug.
EXPECTED_DIFFERENCES: dict[tuple[str, str], str] = {
}

TIMEOUT = 420


def _outcomes(xml_path: Path) -> dict[str, str]:
    tree = ET.parse(xml_path)
    out = {}
    for case in tree.iter("testcase"):
        name = case.get("name")
        kinds = {child.tag for child in case}
        if "error" in kinds:
            out[name] = "error"
        elif "failure" in kinds:
            out[name] = "failed"
        elif "skipped" in kinds:
            out[name] = "skipped"
        else:
            out[name] = "passed"
    return out


def _details(xml_path: Path, names: set[str]) -> str:
    lines = []
    for case in ET.parse(xml_path).iter("testcase"):
        if case.get("name") in names:
            for child in case:
                text = (child.text or child.get("message") or "").strip()
                lines.append(f"  {case.get('name')}: {child.tag}: {text[-600:]}")
    return "\n".join(lines)


def _regrtest(run, scratch: Path, tag: str, module: str):
    work = scratch / tag
    (work / "tmp").mkdir(parents=True)
    for p in (work, work / "tmp"):
        os.chmod(p, 0o777)
    xml = work / "results.xml"
    res = run("python3", "-m", "test", "--junit-xml", f"/mnt/{tag}/results.xml", module,
              env=guest_env(TMPDIR=f"/mnt/{tag}/tmp", PYTHONDONTWRITEBYTECODE="1"))
    if not xml.exists():
        pytest.fail(f"{tag}: python3 -m test {module} wrote no results "
                    f"(exit {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}",
                    pytrace=False)
    return res, xml


HOST_TESTSUITE = Path("/usr/lib/python3.11/test")


def _root_and_binds(request, which: str, scratch: Path):
    """host_root has the test suite; the Debian root gets the host's bound in."""
    # Native chroot gets the host's /dev, /proc and /sys; so does uvm, explicitly:
    # its default keeps a root's own /dev, and debootstrap's static one has a
    # /dev/ptmx without a devpts behind it (openpty fails with ENODEV).
    binds = [(scratch, "/mnt"), ("/dev", "/dev"), ("/proc", "/proc"), ("/sys", "/sys")]
    root = request.getfixturevalue(f"{which}_root")
    if which == "debian":
        if not (HOST_TESTSUITE / "test_os.py").exists():
            pytest.fail("the host lacks libpython3.11-testsuite: run ./dev/setup.sh",
                        pytrace=False)
        binds.append((HOST_TESTSUITE, str(HOST_TESTSUITE)))
    return root, binds


@pytest.mark.slow
@pytest.mark.timeout(2 * TIMEOUT + 60)
@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("which", ["host", "debian"])
def test_cpython_regression_tests_match_native(uvm_runner, request, scratch, which, module):
    """Same outcomes under uvm and native chroot, in host_root and the Debian root.

    The Debian root's python3 (bookworm without updates) may be a patch
    release behind the host's test suite bound into it; both runs share that.
    """
    host_root, binds = _root_and_binds(request, which, scratch)
    native_binds = [b for b in binds if b[0] not in ("/dev", "/proc", "/sys")]
    uvm_binds = binds
    _native_res, native_xml = _regrtest(
        lambda *cmd, env: uvm_runner.native(host_root, *cmd, binds=native_binds, cwd="/mnt",
                                            env=env, timeout=TIMEOUT),
        scratch, "native", module)
    uvm_res, uvm_xml = _regrtest(
        lambda *cmd, env: uvm_runner.run(host_root, *cmd, binds=uvm_binds, cwd="/mnt",
                                         env=env, timeout=TIMEOUT),
        scratch, "uvm", module)
    native = _outcomes(native_xml)
    under_uvm = _outcomes(uvm_xml)
    assert native, "the baseline ran no test"

    differences = {}
    for name in sorted(set(native) | set(under_uvm)):
        a, b = native.get(name, "absent"), under_uvm.get(name, "absent")
        if a != b:
            differences[name] = (a, b)
    unexplained = {
        name: d for name, d in differences.items()
        if (uvm_runner.mode, name) not in EXPECTED_DIFFERENCES
        and ("*", name) not in EXPECTED_DIFFERENCES}
    if unexplained:
        listing = "\n".join(f"  {name}: native {a}, uvm {b}"
                            for name, (a, b) in unexplained.items())
        pytest.fail(
            f"{module} in {which}_root as {uvm_runner.mode}: {len(unexplained)} of {len(native)} tests "
            f"differ from native chroot:\n{listing}\nuvm's reports:\n"
            f"{_details(uvm_xml, set(unexplained))}\n"
            f"uvm stderr tail:\n{uvm_res.stderr[-1500:]}", pytrace=False)
