"""One ``codec`` fixture, three implementations; every test runs on each.

- ``python``: the pure-Python twin (``uvm._pycodec``);
- ``native``: the C codec as uvm uses it (one-shot libdeflate inflate for
  objects with a known size, zlib streaming otherwise);
- ``native-stream``: the C codec with the one-shot path switched off, so
  the zlib streaming path is tested on small objects too.
"""

from __future__ import annotations

import types

import pytest

from uvm import _native, _pycodec

NAMES = ("Decoder", "Encoder", "decode_bytes", "encode_bytes", "decode_to_path")


def _namespace(module, name):
    return types.SimpleNamespace(name=name, **{n: getattr(module, n) for n in NAMES})


@pytest.fixture(scope="module", params=["python", "native", "native-stream"])
def codec(request):
    if request.param == "python":
        yield _namespace(_pycodec, "python")
        return
    if _native.BACKEND != "native":
        pytest.skip(f"C codec not active: {_native.DETAIL}")
    saved = _native.ONESHOT_LIMIT
    if request.param == "native-stream":
        _native.ONESHOT_LIMIT = -1
    try:
        yield _namespace(_native, request.param)
    finally:
        _native.ONESHOT_LIMIT = saved
