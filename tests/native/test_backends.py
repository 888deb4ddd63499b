"""The two backends agree on damaged input; the switch between them works."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from uvm import _native, _pycodec
from uvm.cvmfs.hashing import Algorithm, ContentHash
from uvm.errors import DecodeError

native = pytest.mark.skipif(_native.BACKEND != "native", reason="C codec not active")

DATA = bytes(range(256)) * 40 + b"CernVM-FS object " * 300
STORED = zlib.compress(DATA)


def _outcome(module, pieces, **kwargs):
    with tempfile.TemporaryFile() as out:
        decoder = module.Decoder(Algorithm.SHA1, out.fileno(), **kwargs)
        try:
            for piece in pieces:
                decoder.feed(piece)
            result = decoder.finish()
        except DecodeError as err:
            return err.failure
        out.seek(0)
        return result, out.read()


@native
@settings(max_examples=int(os.environ.get("UVM_DAMAGE_EXAMPLES", "300")), deadline=None)
@given(
    index=st.integers(min_value=0, max_value=len(STORED) - 1),
    xor=st.integers(min_value=1, max_value=255),
    cuts=st.lists(st.integers(min_value=0, max_value=len(STORED)), min_size=1, max_size=3),
    size_delta=st.sampled_from([None, 0, -1, 1]),
    with_hash=st.booleans(),
    oneshot=st.booleans(),
)
# Decodes to one byte too many, then fails its Adler-32: CORRUPT, as zlib says.
@example(index=289, xor=4, cuts=[1], size_delta=0, with_hash=False, oneshot=True)
@example(index=289, xor=4, cuts=[1], size_delta=0, with_hash=False, oneshot=False)
def test_a_damaged_byte_gives_the_same_outcome_in_both(
    index, xor, cuts, size_delta, with_hash, oneshot
):
    """Any split of any damaged stream: the C codec names the twin's failure."""
    damaged = STORED[:index] + bytes([STORED[index] ^ xor]) + STORED[index + 1 :]
    bounds = [0, *sorted(cuts), len(damaged)]
    pieces = [damaged[a:b] for a, b in zip(bounds, bounds[1:])]
    kwargs = {}
    if size_delta is not None:
        kwargs["expected_size"] = len(DATA) + size_delta
    if with_hash:
        kwargs["expected_hash"] = ContentHash.of(STORED)
    saved = _native.ONESHOT_LIMIT
    if not oneshot:
        _native.ONESHOT_LIMIT = -1
    try:
        assert _outcome(_native, pieces, **kwargs) == _outcome(_pycodec, pieces, **kwargs)
    finally:
        _native.ONESHOT_LIMIT = saved


def _python(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env={**os.environ, **env},
    )


def test_uvm_codec_python_forces_the_twin_quietly():
    result = _python("import uvm._native as n; print(n.BACKEND, n.Decoder.__module__)",
                     UVM_CODEC="python")
    assert result.stdout.split() == ["python", "uvm._pycodec"]
    assert "Warning" not in result.stderr


def test_missing_extension_falls_back_with_one_warning():
    code = """
import sys, warnings
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "uvm._native_codec":
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import uvm._native as n
    import uvm._native
print(n.BACKEND, len([w for w in caught if issubclass(w.category, RuntimeWarning)]))
"""
    result = _python(code, UVM_CODEC="")
    assert result.stdout.split() == ["python", "1"], result.stderr


def test_version_line_names_the_codec():
    result = _python("from uvm.cli.doctor import version_line; print(version_line())")
    assert f"(codec: {_native.BACKEND})" in result.stdout
    result = _python("from uvm.cli.doctor import version_line; print(version_line())",
                     UVM_CODEC="python")
    assert "(codec: python)" in result.stdout


@native
def test_doctor_check_says_native():
    (check,) = list(_native.checks())
    assert check.ok and "native" in check.detail


@pytest.mark.skipif(
    os.environ.get("UVM_CODEC", "").lower() == "python", reason="UVM_CODEC=python"
)
def test_the_c_codec_is_built():
    """dev/setup.sh installs what the build needs: a silent fallback is a bug here."""
    assert _native.BACKEND == "native", _native.DETAIL
