"""Pure functions of the format layer: variant symlinks, path hashes, manifest and whitelist text."""

from __future__ import annotations

import datetime as _dt
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from uvm.cvmfs import manifest as manifest_mod
from uvm.cvmfs import signature, variant
from uvm.cvmfs import whitelist as whitelist_mod
from uvm.cvmfs.catalog import md5_pair, parent_pair
from uvm.cvmfs.hashing import Algorithm, ContentHash
from uvm.cvmfs.repository import normalize
from uvm.errors import ManifestError, SignatureError

ENV = {"ARCH": "x86_64", "EMPTY": ""}


@pytest.mark.parametrize("target, expected", [
    ("plain/path", "plain/path"),
    ("$(ARCH)/lib", "x86_64/lib"),
    ("/opt/$(ARCH)/$(ARCH)", "/opt/x86_64/x86_64"),
    ("$(UNSET)/lib", "/lib"),                       # unset, no default: empty
    ("$(UNSET:-el9)/lib", "el9/lib"),               # default
    ("$(ARCH:-i386)", "x86_64"),                    # set beats default
    ("$(EMPTY:-dflt)", ""),                         # set but empty: still set
    ("$(unterminated", "$(unterminated"),           # stays literal
    ("a$b", "a$b"),
    ("$(", "$("),
    ("end$(A", "end$(A"),
    ("$(ARCH)$(ARCH:-x)$(NOPE:-)", "x86_64x86_64"),
])
def test_variant_symlinks_expand_like_the_stock_client(target, expected):
    assert variant.expand(target, ENV) == expected


def test_path_hashes_are_signed_little_endian_halves():
    digest = hashlib.md5(b"/software/x86_64").digest()
    assert md5_pair("/software/x86_64") == struct.unpack("<qq", digest)
    assert parent_pair("") == (0, 0)
    assert parent_pair("/a") == md5_pair("")
    assert parent_pair("/a/b") == md5_pair("/a")
    # non-UTF-8 names hash their raw bytes
    odd = b"/dir/\xff\xfe".decode("utf-8", "surrogateescape")
    assert md5_pair(odd) == struct.unpack("<qq", hashlib.md5(b"/dir/\xff\xfe").digest())


@pytest.mark.parametrize("given, expected", [
    ("/", ""), ("", ""), ("/a/b/", "/a/b"), ("a//b", "/a/b"), ("/a/./b/../c", "/a/c"),
    ("/../..", ""), ("//x", "/x"),
])
def test_paths_are_normalized_without_leaving_the_root(given, expected):
    assert normalize(given) == expected


def test_manifest_render_parse_round_trip_in_publisher_order():
    h = ContentHash.of(b"x")
    m = manifest_mod.Manifest(root_hash=h, catalog_size=4096, revision=7, fqrn="a.b",
                              certificate=h, history=h, timestamp=123)
    text = manifest_mod.render(m)
    assert [line[:1] for line in text.decode().splitlines()] == list("CBRDSGANXHT")
    assert manifest_mod.parse_manifest(text) == m


def test_manifest_parser_follows_parse_keyval_mem():
    h = str(ContentHash.of(b"x"))
    body = f"C{h}\nRd41d8cd98f00b204e9800998ecf8427e\nD60\nS1\nS2\nQunknown\nS3".encode()
    m = manifest_mod.parse_manifest(body)  # later S wins; unterminated last line ignored
    assert m.revision == 2
    with pytest.raises(ManifestError):
        manifest_mod.parse_manifest(b"Rd41d8cd98f00b204e9800998ecf8427e\nD60\nS1\n")


def test_raw_pkcs1_sign_and_recover():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = b"0123456789abcdef0123456789abcdef01234567"
    sig = signature.sign_raw_pkcs1(key, message)
    assert len(sig) == 256
    assert signature.recover_raw_pkcs1(key.public_key(), sig) == message
    assert signature.verify_raw_pkcs1([key.public_key()], message, sig)
    assert not signature.verify_raw_pkcs1([key.public_key()], message + b"x", sig)
    bad = bytearray(sig)
    bad[5] ^= 1
    assert signature.recover_raw_pkcs1(key.public_key(), bytes(bad)) != message


def test_whitelist_text_and_fingerprint_lines():
    now = _dt.datetime(2024, 5, 1, 12, 34, 56, tzinfo=_dt.timezone.utc)
    body = whitelist_mod.render("a.b", "AA:" * 19 + "AA", now, 30)
    assert body.splitlines()[:3] == [b"20240501123456", b"E20240531123456", b"Na.b"]
    parsed = whitelist_mod.parse(body + b"--\n")
    assert parsed.fingerprints == (ContentHash(Algorithm.SHA1, b"\xaa" * 20),)
    assert signature.parse_fingerprint("AB:" * 19 + "CD-SHAKE128 # comment") == ContentHash(
        Algorithm.SHAKE128, b"\xab" * 19 + b"\xcd")
    assert signature.parse_fingerprint("not a fingerprint") is None


def test_letter_without_separator_is_a_signature_error():
    with pytest.raises(SignatureError):
        signature.split_letter(b"Cabc\nS1\n", "manifest")


def test_xattr_blobs_parse_as_the_stock_client_packs_them():
    from uvm.cvmfs.catalog import parse_xattrs
    from uvm.errors import CatalogError

    blob = bytes([1, 2, 3, 1]) + b"a.bX" + bytes([19, 4]) + b"security.capability" + b"\x01\x02\x03\x04"
    assert parse_xattrs(blob) == {"a.b": b"X", "security.capability": b"\x01\x02\x03\x04"}
    assert parse_xattrs(None) == {}
    with pytest.raises(CatalogError):
        parse_xattrs(blob[:-1])
