"""The object codec, run identically on the Python twin and the C codec."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import tempfile
import threading
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uvm.cvmfs.hashing import Algorithm, ContentHash
from uvm.errors import DecodeError, DecodeFailure

ALGORITHMS = list(Algorithm)
HYPOTHESIS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _samples():
    rng = random.Random(3)
    random_bytes = rng.randbytes(300_000)
    text = Path(os.__file__).read_bytes() * 3
    binary = Path("/bin/bash").read_bytes()[:2_000_000]
    return {
        "random": random_bytes,
        "text": text,
        "binary": binary,
        "compressed": zlib.compress(random_bytes[:100_000]),
        "empty": b"",
        "one-byte": b"x",
        "zeros": bytes(1_000_000),
    }


SAMPLES = _samples()


def split(data: bytes, size: int):
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def decode(codec, pieces, algorithm=Algorithm.SHA1, expected_hash=None, expected_size=None,
           compressed=True):
    """Decode into an anonymous file: (result, output bytes, or the DecodeError)."""
    with tempfile.TemporaryFile() as out:
        decoder = codec.Decoder(algorithm, out.fileno(), expected_hash, expected_size, compressed)
        for piece in pieces:
            decoder.feed(piece)
        result = decoder.finish()
        out.seek(0)
        return result, out.read()


def decode_failure(codec, pieces, **kwargs):
    with pytest.raises(DecodeError) as info:
        decode(codec, pieces, **kwargs)
    return info.value.failure


# --- good objects ----------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_decodes_like_zlib(codec, kind, algorithm):
    data = SAMPLES[kind]
    stored = zlib.compress(data)
    want = ContentHash.of(stored, algorithm)
    for pieces in (split(stored, 65536), split(stored, 1000), [stored]):
        result, out = decode(codec, pieces, algorithm, want, len(data))
        assert out == data
        assert result.content_hash == want and result.size == len(data)
    # Size unknown (streams in every backend).
    result, out = decode(codec, [stored], algorithm)
    assert out == data and result.content_hash == want


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_decode_bytes_in_one_call(codec, kind, tmp_path):
    data = SAMPLES[kind]
    stored = zlib.compress(data, 9)
    want = ContentHash.of(stored)
    with open(tmp_path / "out", "wb") as out:
        result = codec.decode_bytes(stored, Algorithm.SHA1, out.fileno(), want, len(data))
    assert (tmp_path / "out").read_bytes() == data
    assert result.content_hash == want and result.size == len(data)
    with open(tmp_path / "out2", "wb") as out:
        result = codec.decode_bytes(memoryview(bytearray(stored)), Algorithm.SHA1, out.fileno())
    assert (tmp_path / "out2").read_bytes() == data and result.content_hash == want


@HYPOTHESIS
@given(
    data=st.one_of(st.binary(max_size=3000), st.binary(min_size=1, max_size=50).map(lambda b: b * 200)),
    cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=12),
    known_size=st.booleans(),
)
def test_any_split_of_the_input(codec, data, cuts, known_size):
    stored = zlib.compress(data)
    bounds = sorted({0, len(stored), *[c % (len(stored) + 1) for c in cuts]})
    pieces = [stored[a:b] for a, b in zip(bounds, bounds[1:])]
    result, out = decode(codec, pieces, Algorithm.SHA1, ContentHash.of(stored),
                         len(data) if known_size else None)
    assert out == data and result.size == len(data)


@pytest.mark.slow
def test_hundred_mebibyte_object(codec, big_object, tmp_path):
    data_sha1, size, stored = big_object
    path = tmp_path / "big"
    result = codec.decode_to_path(
        (stored[i : i + (1 << 20)] for i in range(0, len(stored), 1 << 20)),
        path, Algorithm.SHA1, ContentHash.of(stored), size,
    )
    assert result.size == size == path.stat().st_size
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    assert digest.hexdigest() == data_sha1


@pytest.fixture(scope="module")
def big_object():
    """100 MiB, cheap to make: 1 MiB blocks of random bytes and text, repeated."""
    rng = random.Random(100)
    blocks = [rng.randbytes(1 << 18) + Path(os.__file__).read_bytes()[: 3 << 18].ljust(3 << 18, b"\n")
              for _ in range(4)]
    compressor = zlib.compressobj(1)
    digest = hashlib.sha1()
    parts = []
    for i in range(100):
        block = blocks[i % 4]
        digest.update(block)
        parts.append(compressor.compress(block))
    parts.append(compressor.flush())
    return digest.hexdigest(), 100 << 20, b"".join(parts)


# --- uncompressed objects ---------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
def test_uncompressed_objects_are_copied_and_hashed_raw(codec, algorithm):
    data = SAMPLES["binary"][:300_000]
    want = ContentHash.of(data, algorithm)
    result, out = decode(codec, split(data, 7000), algorithm, want, len(data), compressed=False)
    assert out == data and result.content_hash == want and result.size == len(data)
    result, out = decode(codec, [], algorithm, ContentHash.of(b"", algorithm), 0, compressed=False)
    assert out == b"" and result.size == 0


def test_uncompressed_failures(codec):
    data = b"plain bytes" * 100
    want = ContentHash.of(data)
    assert decode_failure(codec, [data], expected_size=len(data) - 1, compressed=False) \
        is DecodeFailure.TOO_LARGE
    assert decode_failure(codec, [data], expected_size=len(data) + 1, compressed=False) \
        is DecodeFailure.TOO_SMALL
    assert decode_failure(codec, [data + b"!"], expected_hash=want, compressed=False) \
        is DecodeFailure.HASH_MISMATCH


# --- bad objects --------------------------------------------------------------

GOOD = SAMPLES["text"][:200_000]
STORED = zlib.compress(GOOD)


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x55]) + data[index + 1 :]


BAD = {
    # name: (pieces, kwargs, failure)
    "truncated": ([STORED[:-6]], {}, DecodeFailure.TRUNCATED),
    "truncated-with-size": ([STORED[: len(STORED) // 2]], {"expected_size": len(GOOD)},
                            DecodeFailure.TRUNCATED),
    "bad-header": ([_flip(STORED, 0)], {}, DecodeFailure.CORRUPT),
    "bad-checksum": ([_flip(STORED, len(STORED) - 1)], {"expected_size": len(GOOD)},
                     DecodeFailure.CORRUPT),
    "trailing-garbage": ([STORED + b"junk"], {}, DecodeFailure.TRAILING_GARBAGE),
    "trailing-piece": ([STORED, b"j"], {"expected_size": len(GOOD)},
                       DecodeFailure.TRAILING_GARBAGE),
    "wrong-hash": ([STORED], {"expected_hash": ContentHash.of(b"other")},
                   DecodeFailure.HASH_MISMATCH),
    "valid-zlib-wrong-content": ([zlib.compress(b"evil" * 1000)],
                                 {"expected_hash": ContentHash.of(STORED)},
                                 DecodeFailure.HASH_MISMATCH),
    "too-large": ([STORED], {"expected_size": len(GOOD) - 1}, DecodeFailure.TOO_LARGE),
    "too-small": ([STORED], {"expected_size": len(GOOD) + 1, "expected_hash": ContentHash.of(STORED)},
                  DecodeFailure.TOO_SMALL),
    "empty": ([b""], {}, DecodeFailure.EMPTY),
    "empty-with-size": ([], {"expected_size": 0}, DecodeFailure.EMPTY),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_object_is_a_distinct_failure(codec, name):
    pieces, kwargs, failure = BAD[name]
    assert decode_failure(codec, pieces, **kwargs) is failure
    # The one-call entry point agrees.
    with tempfile.TemporaryFile() as out, pytest.raises(DecodeError) as info:
        codec.decode_bytes(b"".join(pieces), Algorithm.SHA1, out.fileno(), **kwargs)
    assert info.value.failure is failure


@pytest.mark.parametrize("name", sorted(BAD))
def test_failure_leaves_nothing_at_the_path(codec, name, tmp_path):
    pieces, kwargs, failure = BAD[name]
    target = tmp_path / "ab" / "cdef"
    target.parent.mkdir()
    for given_pieces in (iter(pieces), b"".join(pieces)):
        with pytest.raises(DecodeError) as info:
            codec.decode_to_path(given_pieces, target, Algorithm.SHA1, **kwargs)
        assert info.value.failure is failure
        assert list(target.parent.iterdir()) == []


def test_decode_to_path_renames_only_a_verified_object(codec, tmp_path):
    target = tmp_path / "obj"
    result = codec.decode_to_path(split(STORED, 4096), target, Algorithm.SHA1,
                                  ContentHash.of(STORED), len(GOOD))
    assert target.read_bytes() == GOOD and result.size == len(GOOD)
    assert [p.name for p in tmp_path.iterdir()] == ["obj"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_zip_bomb_stops_at_the_expected_size(codec, tmp_path):
    bomb = zlib.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in ~64 KiB
    limit = 1 << 20
    with open(tmp_path / "out", "wb") as out:
        decoder = codec.Decoder(Algorithm.SHA1, out.fileno(), None, limit)
        with pytest.raises(DecodeError) as info:
            for piece in split(bomb, 8192):
                decoder.feed(piece)
            decoder.finish()
        assert info.value.failure is DecodeFailure.TOO_LARGE
        assert os.fstat(out.fileno()).st_size <= limit
    assert (tmp_path / "out").stat().st_size <= limit


def test_write_failure(codec):
    with open("/dev/full", "wb") as out, pytest.raises(DecodeError) as info:
        codec.decode_bytes(STORED, Algorithm.SHA1, out.fileno(), None, len(GOOD))
    assert info.value.failure is DecodeFailure.WRITE
    assert "No space left on device" in str(info.value)
    assert info.value.__cause__.errno == errno.ENOSPC
    with open("/dev/full", "wb") as out, pytest.raises(DecodeError) as info:
        decoder = codec.Decoder(Algorithm.SHA1, out.fileno(), compressed=False)
        decoder.feed(b"x" * 100)
        decoder.finish()
    assert info.value.failure is DecodeFailure.WRITE
    assert "No space left on device" in str(info.value)


def test_encoder_write_failure(codec):
    with open("/dev/full", "wb") as out, pytest.raises(DecodeError) as info:
        encoder = codec.Encoder(Algorithm.SHA1, out.fileno())
        encoder.feed(SAMPLES["random"])
        encoder.finish()
    assert info.value.failure is DecodeFailure.WRITE


def test_expected_hash_of_another_algorithm_is_refused(codec):
    with pytest.raises(ValueError):
        codec.Decoder(Algorithm.SHA1, 1, ContentHash.of(b"", Algorithm.SHAKE128))


# --- encoder ------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.name)
@pytest.mark.parametrize("kind", ["random", "text", "empty", "one-byte", "zeros"])
def test_encoder_matches_zlib_and_hashes_what_it_wrote(codec, kind, algorithm, tmp_path):
    data = SAMPLES[kind]
    with open(tmp_path / "z", "wb") as out:
        encoder = codec.Encoder(algorithm, out.fileno(), 6)
        for piece in split(data, 50_000):
            encoder.feed(piece)
        result = encoder.finish()
    stored = (tmp_path / "z").read_bytes()
    assert stored == zlib.compress(data, 6)
    assert zlib.decompress(stored) == data
    assert result.content_hash == ContentHash.of(stored, algorithm)
    assert result.compressed_size == len(stored) and result.size == len(data)
    with open(tmp_path / "z1", "wb") as out:
        again = codec.encode_bytes(data, algorithm, out.fileno(), 6)
    assert again == result


def test_encode_then_decode_round_trip(codec, tmp_path):
    with open(tmp_path / "z", "wb") as out:
        encoded = codec.encode_bytes(GOOD, Algorithm.SHAKE128, out.fileno(), 1)
    result = codec.decode_to_path((tmp_path / "z").read_bytes(), tmp_path / "plain",
                                  Algorithm.SHAKE128, encoded.content_hash, encoded.size)
    assert (tmp_path / "plain").read_bytes() == GOOD and result.content_hash == encoded.content_hash


# --- threads ------------------------------------------------------------------


def test_four_threads_at_once(codec, tmp_path):
    objects = []
    for i in range(4):
        data = SAMPLES["binary"][i * 100_000 : (i + 1) * 100_000] + SAMPLES["random"][: i * 5000]
        stored = zlib.compress(data)
        objects.append((data, stored, ContentHash.of(stored, ALGORITHMS[i % 3])))
    errors = []

    def work(n):
        try:
            data, stored, want = objects[n]
            for round_ in range(15):
                path = tmp_path / f"t{n}-{round_}"
                if round_ % 2:
                    result = codec.decode_to_path(stored, path, want.algorithm, want, len(data))
                else:
                    result = codec.decode_to_path(split(stored, 10_000), path, want.algorithm,
                                                  want, len(data))
                assert result.content_hash == want and path.read_bytes() == data
                with open(tmp_path / f"e{n}", "wb") as out:
                    encoded = codec.encode_bytes(data, want.algorithm, out.fileno())
                assert encoded.content_hash == ContentHash.of(zlib.compress(data), want.algorithm)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_valid_stream_far_longer_than_its_output(codec):
    """Empty stored blocks: valid zlib, but past what the one-shot path collects."""
    compressor = zlib.compressobj()
    head = compressor.compress(b"hi") + compressor.flush(zlib.Z_SYNC_FLUSH)
    empty_stored_block = b"\x00\x00\x00\xff\xff"  # byte-aligned after the sync flush
    stored = head + empty_stored_block * 2000 + compressor.flush()
    assert zlib.decompress(stored) == b"hi"
    assert len(stored) > 5000
    result, out = decode(codec, split(stored, 999), expected_hash=ContentHash.of(stored),
                         expected_size=2)
    assert out == b"hi" and result.size == 2
    assert decode_failure(codec, split(stored, 999), expected_size=1) is DecodeFailure.TOO_LARGE
