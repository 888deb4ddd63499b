"""Repository keys as ``cvmfs_server mkfs`` lays them out, and loading them for a publish.

``FQRN.masterkey`` / ``FQRN.pub``: the master key pair, which signs the
whitelist (the public half is what clients install).  ``FQRN.key`` /
``FQRN.crt``: the repository key and its self-signed X.509 certificate,
which sign the manifest.  All PEM, RSA 2048, e = 65537.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from uvm.cvmfs import signature
from uvm.errors import PublishError

KEY_BITS = 2048
CERT_DAYS = 365


@dataclass(frozen=True)
class KeyPaths:
    masterkey: str
    pub: str
    key: str
    crt: str

    @classmethod
    def of(cls, fqrn: str, keydir: str) -> "KeyPaths":
        base = os.path.join(keydir, fqrn)
        return cls(base + ".masterkey", base + ".pub", base + ".key", base + ".crt")


@dataclass(frozen=True)
class PublishKeys:
    """What a publish signs with."""

    master_key: rsa.RSAPrivateKey
    repository_key: rsa.RSAPrivateKey
    certificate_pem: bytes
    certificate: x509.Certificate


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    # Traditional "BEGIN RSA PRIVATE KEY", as `openssl genrsa` wrote it for the stock tools.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def create_keys(fqrn: str, keydir: str) -> KeyPaths:
    """Generate the four files; refuses to overwrite existing ones."""
    paths = KeyPaths.of(fqrn, keydir)
    try:
        os.makedirs(keydir, exist_ok=True)
    except OSError as err:
        raise PublishError(f"cannot create key directory {keydir}: {err.strerror}") from None
    for path in (paths.masterkey, paths.pub, paths.key, paths.crt):
        if os.path.exists(path):
            raise PublishError(f"key file {path} already exists", hint="keys are never overwritten")
    master = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    repo = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, f"{fqrn} CernVM-FS Release Managers")])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(repo.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=CERT_DAYS))
        .sign(repo, hashes.SHA256())
    )
    try:
        _write(paths.masterkey, _private_pem(master), 0o400)
        _write(paths.key, _private_pem(repo), 0o400)
        _write(paths.pub, master.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o444)
        _write(paths.crt, cert.public_bytes(serialization.Encoding.PEM), 0o444)
    except OSError as err:
        raise PublishError(f"cannot write keys to {keydir}: {err.strerror}") from None
    return paths


def load_publish_keys(fqrn: str, keydir: str) -> PublishKeys:
    paths = KeyPaths.of(fqrn, keydir)

    def read(path: str) -> bytes:
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as err:
            raise PublishError(
                f"cannot read key file {path}: {err.strerror}",
                hint=f"create keys with 'uvm keys create {fqrn} --dir {keydir}'",
            ) from None

    cert_pem = read(paths.crt)
    keys = PublishKeys(
        master_key=signature.load_private_key(read(paths.masterkey), paths.masterkey),
        repository_key=signature.load_private_key(read(paths.key), paths.key),
        certificate_pem=cert_pem,
        certificate=signature.load_certificate(cert_pem),
    )
    cert_numbers = keys.certificate.public_key().public_numbers()
    if cert_numbers != keys.repository_key.public_key().public_numbers():
        raise PublishError(f"{paths.crt} does not belong to {paths.key}")
    return keys
