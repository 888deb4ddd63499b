"""uvm's verifier on real data signed by the stock tools (atlas.cern.ch, 2015)."""

from __future__ import annotations

import base64
import datetime as _dt
import os

import cvmfs_stock_samples as samples
import pytest
from cryptography.hazmat.primitives import serialization

from uvm.cvmfs import manifest as manifest_mod
from uvm.cvmfs import signature
from uvm.cvmfs import whitelist as whitelist_mod
from uvm.cvmfs.hashing import ContentHash, Suffix
from uvm.cvmfs.http_source import SimpleSource
from uvm.cvmfs.repository import Repository
from uvm.errors import FetchError, SignatureError, WhitelistError

WHEN = _dt.datetime(2015, 6, 10, 12, 0, tzinfo=_dt.timezone.utc)


@pytest.fixture
def stratum(tmp_path):
    """The three bootstrap files of the sample laid out as a server directory."""
    root = tmp_path / "atlas.cern.ch"
    manifest = manifest_mod.parse_manifest(samples.MANIFEST)
    cert_path = root / manifest.certificate.object_path(Suffix.CERTIFICATE)
    cert_path.parent.mkdir(parents=True)
    cert_path.write_bytes(base64.b64decode(samples.CERTIFICATE_OBJECT_B64))
    (root / ".cvmfspublished").write_bytes(samples.MANIFEST)
    (root / ".cvmfswhitelist").write_bytes(samples.WHITELIST)
    key = tmp_path / "cern.ch.pub"
    key.write_bytes(samples.CERN_PUBLIC_KEY)
    return str(root), str(key)


def _certificate(stratum_dir):
    manifest = manifest_mod.parse_manifest(samples.MANIFEST)
    source = SimpleSource([stratum_dir])
    try:
        with open(source.fetch_object(manifest.certificate, Suffix.CERTIFICATE), "rb") as handle:
            return signature.load_certificate(handle.read())
    finally:
        source.close()


def test_manifest_fields_and_signature(stratum):
    manifest = manifest_mod.parse_manifest(samples.MANIFEST)
    assert manifest.revision == 8722 and manifest.ttl == 900 and manifest.fqrn == "atlas.cern.ch"
    assert manifest.catalog_size == 75834368 and manifest.timestamp == 1433937750
    assert str(manifest.root_hash) == "044206fcff4545283aaa452b80edfd5d8c740b20"
    cert = _certificate(stratum[0])  # also checks the object's hash over the zlib stream
    manifest_mod.verify_signature(samples.MANIFEST, signature.certificate_public_key(cert))
    tampered = samples.MANIFEST.replace(b"S8722", b"S8723")
    with pytest.raises(SignatureError):
        manifest_mod.verify_signature(tampered, signature.certificate_public_key(cert))


def test_whitelist_signature_fingerprint_and_expiry(stratum):
    cert = _certificate(stratum[0])
    assert signature.certificate_fingerprint(cert) == (
        "EA:74:15:E5:F5:A4:34:7D:79:37:37:88:33:6A:1E:0D:D0:A4:18:25")
    keys = signature.load_master_keys([stratum[1]])
    der = cert.public_bytes(serialization.Encoding.DER)
    listed = whitelist_mod.verify(samples.WHITELIST, keys, "atlas.cern.ch", der, now=WHEN)
    assert len(listed.fingerprints) == 3
    # the raw PKCS#1 payload is the hash line itself, no DigestInfo
    letter = signature.split_letter(samples.WHITELIST, "whitelist")
    assert signature.recover_raw_pkcs1(keys[0], letter.signature) == letter.hash_text.encode()
    with pytest.raises(WhitelistError):
        whitelist_mod.verify(samples.WHITELIST, keys, "atlas.cern.ch", der,
                             now=_dt.datetime(2015, 7, 4, 9, 1, tzinfo=_dt.timezone.utc))
    broken = bytearray(samples.WHITELIST)
    broken[-100] ^= 1
    with pytest.raises(SignatureError):
        whitelist_mod.verify(bytes(broken), keys, "atlas.cern.ch", der, now=WHEN)


def test_repository_open_verifies_the_sample_up_to_the_catalog(stratum, tmp_path):
    root, key = stratum
    with pytest.raises(FetchError) as err:
        Repository.open("atlas.cern.ch", servers=root, keys=key, now=WHEN,
                        state_dir=str(tmp_path / "state"))
    # every check passed; only the 75 MB root catalog is not part of the sample
    assert "044206fcff4545283aaa452b80edfd5d8c740b20"[2:] in str(err.value)
    assert os.path.exists(tmp_path / "state" / "manifests" / "atlas.cern.ch.json")
    assert ContentHash.parse("044206fcff4545283aaa452b80edfd5d8c740b20")
