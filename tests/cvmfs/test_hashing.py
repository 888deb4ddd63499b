import hashlib
import zlib

import pytest

from uvm.cvmfs.hashing import Algorithm, ContentHash, Suffix
from uvm.errors import CvmfsError


def test_sha1_object_path_matches_the_server_layout():
    blob = zlib.compress(b"hello")
    h = ContentHash.of(blob)
    hexdigest = hashlib.sha1(blob).hexdigest()
    assert str(h) == hexdigest
    assert h.object_path(Suffix.CATALOG) == f"data/{hexdigest[:2]}/{hexdigest[2:]}C"
    assert h.cache_path() == f"{hexdigest[:2]}/{hexdigest[2:]}"


def test_shake128_is_cut_to_160_bits_and_carries_its_id():
    h = ContentHash.of(b"x", Algorithm.SHAKE128)
    assert str(h) == hashlib.shake_128(b"x").hexdigest(20) + "-shake128"
    assert h.object_path(Suffix.PARTIAL).endswith("-shake128P")


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_text_form_round_trips(algorithm):
    h = ContentHash(algorithm, bytes(range(20)))
    assert ContentHash.parse(str(h)) == h
    assert Algorithm.from_flags(algorithm.flag_bits | 4) is algorithm


@pytest.mark.parametrize("text", ["", "abc", "zz" * 20, "00" * 20 + "-md5"])
def test_malformed_hash_text_is_refused(text):
    with pytest.raises(CvmfsError):
        ContentHash.parse(text)
