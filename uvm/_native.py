"""The object codec: the C extension when it was built, else its Python twin.

Callers import ``Decoder``, ``Encoder``, ``DecodeResult``, ``EncodeResult``
and ``BACKEND`` from here and never care which one is active.
"""

from __future__ import annotations

from typing import Iterator

from uvm._pycodec import Decoder, DecodeResult, Encoder, EncodeResult

BACKEND = "python"

__all__ = ["BACKEND", "Decoder", "DecodeResult", "Encoder", "EncodeResult", "checks"]


def checks() -> Iterator["object"]:
    from uvm.doctor import Check

    yield Check("codec", BACKEND == "native", f"object codec: {BACKEND}")
