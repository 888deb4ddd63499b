"""Reading keys without ``cryptography``: the DER path agrees with it and refuses what it must."""

from __future__ import annotations

import datetime as _dt
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from uvm.cvmfs import der, signature
from uvm.errors import SignatureError


def _certificate(key, subject_key=None) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test.uvm.local")])
    now = _dt.datetime(2024, 1, 1, tzinfo=_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key((subject_key or key).public_key()).serial_number(12345)
            .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_certificate_key_and_bytes_are_what_cryptography_reads(rsa_key):
    pem = _certificate(rsa_key)
    cert = x509.load_pem_x509_certificate(pem)
    der_bytes = der.certificate_der(pem)
    assert der_bytes == cert.public_bytes(serialization.Encoding.DER)
    assert der.certificate_der(der_bytes) == der_bytes  # DER objects as they are
    numbers = rsa_key.public_key().public_numbers()
    assert der.certificate_key(der_bytes) == der.RsaKey(numbers.n, numbers.e)


def test_manifest_signatures_verify_as_with_cryptography(rsa_key):
    key = der.certificate_key(der.certificate_der(_certificate(rsa_key)))
    message = b"0123456789abcdef0123456789abcdef01234567"
    good = rsa_key.sign(message, padding.PKCS1v15(), hashes.SHA1())
    assert signature.verify_pkcs1_sha1(key, message, good)
    assert not signature.verify_pkcs1_sha1(key, message + b"x", good)
    flipped = bytearray(good)
    flipped[100] ^= 1
    assert not signature.verify_pkcs1_sha1(key, message, bytes(flipped))
    assert not signature.verify_pkcs1_sha1(key, message, good[1:])  # wrong length
    too_big = (key.n + 1).to_bytes(key.size, "big")
    assert not signature.verify_pkcs1_sha1(key, message, too_big)
    sha256 = rsa_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    assert not signature.verify_pkcs1_sha1(key, message, sha256)  # another digest


def test_master_keys_load_from_pem(tmp_path, rsa_key):
    path = tmp_path / "repo.pub"
    path.write_bytes(rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (loaded,) = signature.load_master_keys([str(path)])
    numbers = rsa_key.public_key().public_numbers()
    assert (loaded.n, loaded.e) == (numbers.n, numbers.e)
    pkcs1 = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.PKCS1)
    assert der.public_key_from_pem(pkcs1, "pkcs1") == loaded
    message = b"whitelist hash line"
    sig = signature.sign_raw_pkcs1(rsa_key, message)
    assert signature.verify_raw_pkcs1([loaded], message, sig)


def test_keys_that_are_not_rsa_are_refused(tmp_path, rsa_key):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SignatureError, match="certificate key is not RSA"):
        der.certificate_der(_certificate(rsa_key, subject_key=ec_key))
    pem = ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(SignatureError, match="is not an RSA public key"):
        der.public_key_from_pem(pem, "ec.pub")


@pytest.mark.parametrize("data", [
    b"",
    b"not a certificate at all",
    os.urandom(300),
    b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    b"-----BEGIN CERTIFICATE-----\nAAAA\n",
])
def test_garbage_is_not_a_certificate(data):
    with pytest.raises(SignatureError, match="not an X.509 certificate"):
        der.certificate_der(data)


def test_trailing_and_truncated_certificates_are_refused(rsa_key):
    good = der.certificate_der(_certificate(rsa_key))
    for bad in (good + b"\x00", good[:-1], good[:40]):
        with pytest.raises(SignatureError, match="not an X.509 certificate"):
            der.certificate_der(bad)


@pytest.mark.parametrize("data", [b"", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
                                  b"ssh-rsa AAAAB3NzaC1yc2E= someone"])
def test_garbage_is_not_a_public_key(data):
    with pytest.raises(SignatureError, match="is not a PEM public key"):
        der.public_key_from_pem(data, "bad.pub")
