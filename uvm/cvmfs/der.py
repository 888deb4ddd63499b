"""The few DER structures a reader needs: an X.509 certificate's RSA key, a PEM public key.

Why not ``cryptography``: importing its X.509 layer costs about 60 ms of CPU,
a tenth of a cold template start, to read two integers.  Verifying needs only
the modulus and exponent of the certificate's key and of the master keys; the
RSA operations themselves are ``pow()`` (:mod:`uvm.cvmfs.signature`).

Trust does not rest on this parser: the certificate's DER bytes must carry a
fingerprint that the master-key-signed whitelist lists, so a certificate
that parses differently here than elsewhere is still refused unless the
publisher vouched for exactly those bytes.  The parser is strict all the
same (definite lengths, minimal length octets, no trailing bytes).  Pure
functions over bytes.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import List, Optional, Tuple

from uvm.errors import SignatureError

RSA_ENCRYPTION = bytes.fromhex("2a864886f70d010101")  # OID 1.2.840.113549.1.1.1
_SEQUENCE, _INTEGER, _BIT_STRING, _OID, _VERSION = 0x30, 0x02, 0x03, 0x06, 0xA0


@dataclass(frozen=True)
class RsaKey:
    """An RSA public key: all that verifying a signature needs."""

    n: int
    e: int

    @property
    def size(self) -> int:
        """The modulus length in bytes (the length of every signature)."""
        return (self.n.bit_length() + 7) // 8


class DerError(ValueError):
    """Bytes that are not the DER structure expected."""


def _element(data: bytes, pos: int, end: int) -> Tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``."""
    if pos + 2 > end:
        raise DerError("truncated element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise DerError("bad length")
        length = int.from_bytes(data[pos:pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise DerError("length not in its shortest form")
        pos += count
    if pos + length > end:
        raise DerError("element runs past its container")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> List[Tuple[int, int, int]]:
    out = []
    pos = start
    while pos < end:
        tag, body, stop = _element(data, pos, end)
        out.append((tag, body, stop))
        pos = stop
    return out


def _expect(item: Tuple[int, int, int], tag: int) -> Tuple[int, int]:
    if item[0] != tag:
        raise DerError(f"expected tag {tag:#x}, found {item[0]:#x}")
    return item[1], item[2]


def _positive(data: bytes, start: int, end: int) -> int:
    if start == end or data[start] & 0x80:
        raise DerError("integer is not positive")
    if end - start > 1 and data[start] == 0 and not data[start + 1] & 0x80:
        raise DerError("integer not in its shortest form")
    return int.from_bytes(data[start:end], "big")


def _rsa_public_key(data: bytes, start: int, end: int) -> RsaKey:
    """``RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }``."""
    outer = _children(data, start, end)
    if len(outer) != 1:
        raise DerError("RSA key has trailing bytes")
    fields = _children(data, *_expect(outer[0], _SEQUENCE))
    if len(fields) != 2:
        raise DerError("RSA key is not (modulus, exponent)")
    n = _positive(data, *_expect(fields[0], _INTEGER))
    e = _positive(data, *_expect(fields[1], _INTEGER))
    if e < 3 or not e & 1 or n < e:
        raise DerError("implausible RSA key")
    return RsaKey(n, e)


def _spki(data: bytes, start: int, end: int) -> RsaKey:
    """``SubjectPublicKeyInfo``: an rsaEncryption algorithm and the key in a BIT STRING."""
    parts = _children(data, start, end)
    if len(parts) != 2:
        raise DerError("public key info is not (algorithm, key)")
    algorithm = _children(data, *_expect(parts[0], _SEQUENCE))
    if not algorithm or algorithm[0][0] != _OID \
            or data[algorithm[0][1]:algorithm[0][2]] != RSA_ENCRYPTION:
        raise SignatureError("key is not an RSA key")
    bits_start, bits_end = _expect(parts[1], _BIT_STRING)
    if bits_start == bits_end or data[bits_start] != 0:
        raise DerError("key bit string has unused bits")
    return _rsa_public_key(data, bits_start + 1, bits_end)


def certificate_key(der: bytes) -> RsaKey:
    """The RSA key of a DER X.509 certificate (``TBSCertificate.subjectPublicKeyInfo``)."""
    try:
        top = _children(der, 0, len(der))
        if len(top) != 1:
            raise DerError("certificate has trailing bytes")
        certificate = _children(der, *_expect(top[0], _SEQUENCE))
        if len(certificate) != 3:
            raise DerError("certificate is not (to be signed, algorithm, signature)")
        tbs = _children(der, *_expect(certificate[0], _SEQUENCE))
        if tbs and tbs[0][0] == _VERSION:
            tbs = tbs[1:]
        # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
        if len(tbs) < 6:
            raise DerError("certificate body is too short")
        return _spki(der, *_expect(tbs[5], _SEQUENCE))
    except SignatureError:
        raise SignatureError("certificate key is not RSA") from None
    except DerError as err:
        raise SignatureError(f"certificate object is not an X.509 certificate ({err})") from None


def _pem_block(text: bytes, label: bytes) -> Optional[bytes]:
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    start = text.find(begin)
    if start < 0:
        return None
    stop = text.find(end, start)
    if stop < 0:
        raise DerError(f"PEM block {label.decode()} has no end line")
    body = b"".join(text[start + len(begin):stop].split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise DerError("PEM block is not base64") from None


def certificate_der(data: bytes) -> bytes:
    """The DER bytes of a PEM or DER certificate object (what fingerprints are taken over)."""
    try:
        block = _pem_block(data, b"CERTIFICATE")
    except DerError as err:
        raise SignatureError(f"certificate object is not an X.509 certificate ({err})") from None
    der = data if block is None else block
    certificate_key(der)  # refuses what is not a certificate with an RSA key
    return der


def public_key_from_pem(pem: bytes, where: str) -> RsaKey:
    """An RSA key from a ``PUBLIC KEY`` (SubjectPublicKeyInfo) or ``RSA PUBLIC KEY`` PEM file."""
    try:
        spki = _pem_block(pem, b"PUBLIC KEY")
        if spki is not None:
            top = _children(spki, 0, len(spki))
            if len(top) != 1:
                raise DerError("trailing bytes")
            return _spki(spki, *_expect(top[0], _SEQUENCE))
        pkcs1 = _pem_block(pem, b"RSA PUBLIC KEY")
        if pkcs1 is not None:
            return _rsa_public_key(pkcs1, 0, len(pkcs1))
    except SignatureError:
        raise SignatureError(f"{where} is not an RSA public key") from None
    except DerError:
        pass
    raise SignatureError(f"{where} is not a PEM public key")
