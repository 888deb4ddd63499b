"""RSA signatures, certificate fingerprints and key loading, exactly as CernVM-FS uses them.

Two different RSA schemes protect a repository (format notes §1.2 and §2.2):

* the manifest is signed by the repository certificate's key with ordinary
  RSASSA-PKCS1-v1_5 over SHA-1 of the *hex hash text*;
* the whitelist is signed by the master key with a raw PKCS#1 type-1 padded
  RSA operation over the hex hash text itself (no DigestInfo, no second hash),
  which is what ``openssl pkeyutl -sign`` / ``RSA_private_encrypt`` produce.

The second scheme has no high-level API in ``cryptography``, so it is done
here with the key numbers and ``pow()``; it is a dozen lines and easy to audit.
No I/O except the key loaders at the bottom.
"""

from __future__ import annotations

import glob
import os
from typing import List, NamedTuple, Optional, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from uvm.cvmfs.domains import SYSTEM_KEYS_DIR
from uvm.cvmfs.hashing import Algorithm, ContentHash
from uvm.errors import CvmfsError, SignatureError

SEPARATOR = b"\n--\n"


class SignedLetter(NamedTuple):
    """A text signed the CernVM-FS way: body, hash line, signature bytes."""

    body: bytes
    hash_text: str
    signature: bytes


def split_letter(data: bytes, what: str) -> SignedLetter:
    """Cut ``body\\n--\\nhash\\nsignature`` apart as ``CutLetter`` does.

    ``body`` keeps its final newline: that is the part the hash covers.
    """
    position = data.find(SEPARATOR)
    if data.startswith(b"--\n"):
        position = -1
    if position < 0:
        raise SignatureError(f"{what} has no signature block (no '--' line)")
    body = data[: position + 1]
    rest = data[position + len(SEPARATOR):]
    newline = rest.find(b"\n")
    if newline < 0:
        raise SignatureError(f"{what} signature block has no hash line")
    try:
        hash_text = rest[:newline].decode("ascii")
    except UnicodeDecodeError:
        raise SignatureError(f"{what} hash line is not ASCII") from None
    return SignedLetter(body, hash_text, rest[newline + 1:])


def check_letter_hash(letter: SignedLetter, what: str) -> ContentHash:
    """Recompute the body's hash with the algorithm named by the hash line; compare."""
    try:
        claimed = ContentHash.parse(letter.hash_text)
    except CvmfsError:
        raise SignatureError(
            f"{what} hash line {letter.hash_text[:60]!r} is not a content hash"
        ) from None
    actual = ContentHash.of(letter.body, claimed.algorithm)
    if actual != claimed:
        raise SignatureError(
            f"{what} content does not match its hash line ({actual} != {claimed})"
        )
    return claimed


def letter_hash_text(body: bytes, algorithm: Algorithm) -> str:
    """The hash line a publisher writes under ``body``."""
    return str(ContentHash.of(body, algorithm))


# --- manifest scheme: PKCS#1 v1.5 with SHA-1 -----------------------------------


def sign_pkcs1_sha1(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    return key.sign(message, padding.PKCS1v15(), hashes.SHA1())


def verify_pkcs1_sha1(key: rsa.RSAPublicKey, message: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA1())
    except (InvalidSignature, ValueError):
        return False
    return True


# --- whitelist scheme: raw PKCS#1 type-1 over the message itself ---------------


def _modulus_bytes(n: int) -> int:
    return (n.bit_length() + 7) // 8


def sign_raw_pkcs1(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """``RSA_private_encrypt(message, RSA_PKCS1_PADDING)``: 00 01 FF.. 00 message."""
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    k = _modulus_bytes(n)
    if len(message) > k - 11:
        raise CvmfsError("message too long for a raw RSA signature")
    block = b"\x00\x01" + b"\xff" * (k - 3 - len(message)) + b"\x00" + message
    return pow(int.from_bytes(block, "big"), numbers.d, n).to_bytes(k, "big")


def recover_raw_pkcs1(key: rsa.RSAPublicKey, signature: bytes) -> Optional[bytes]:
    """``RSA_public_decrypt(PKCS1)``: the payload, or None when the padding is wrong."""
    numbers = key.public_numbers()
    k = _modulus_bytes(numbers.n)
    if len(signature) != k:
        return None
    value = int.from_bytes(signature, "big")
    if value >= numbers.n:
        return None
    block = pow(value, numbers.e, numbers.n).to_bytes(k, "big")
    if block[:2] != b"\x00\x01":
        return None
    end = block.find(b"\x00", 2)
    if end < 10 or block[2:end] != b"\xff" * (end - 2):
        return None
    return block[end + 1:]


def verify_raw_pkcs1(
    keys: Sequence[rsa.RSAPublicKey], message: bytes, signature: bytes
) -> bool:
    """True when any of ``keys`` recovers exactly ``message`` (``VerifyRsa``)."""
    return any(recover_raw_pkcs1(key, signature) == message for key in keys)


# --- certificates ---------------------------------------------------------------


def load_certificate(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        try:
            return x509.load_der_x509_certificate(pem)
        except ValueError:
            raise SignatureError("certificate object is not an X.509 certificate") from None


def certificate_public_key(cert: x509.Certificate) -> rsa.RSAPublicKey:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("certificate key is not RSA")
    return key


def certificate_fingerprint(cert: x509.Certificate, algorithm: Algorithm = Algorithm.SHA1) -> str:
    """``AA:BB:..`` upper-case hash of the DER encoding, plus ``-SHAKE128`` etc."""
    digest = ContentHash.of(cert.public_bytes(serialization.Encoding.DER), algorithm)
    text = ":".join(f"{byte:02X}" for byte in digest.digest)
    return text + algorithm.value.upper()


def parse_fingerprint(line: str) -> Optional[ContentHash]:
    """Parse a whitelist fingerprint line as ``MkFromFingerprint``; None if it is not one."""
    for stop in (" ", "\t", "#"):
        cut = line.find(stop)
        if cut >= 0:
            line = line[:cut]
    text = line.replace(":", "").lower()
    try:
        return ContentHash.parse(text)
    except CvmfsError:
        return None


# --- keys -----------------------------------------------------------------------


def load_public_key(pem: bytes, where: str) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise SignatureError(f"{where} is not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError(f"{where} is not an RSA public key")
    return key


def load_private_key(pem: bytes, where: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise SignatureError(f"{where} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SignatureError(f"{where} is not an RSA private key")
    return key


def master_key_paths(
    public_key: Optional[str] = None, keys_dir: Optional[str] = None
) -> List[str]:
    """Where the master public keys come from, in the stock client's precedence.

    ``CVMFS_PUBLIC_KEY`` (a colon list of files) wins over ``CVMFS_KEYS_DIR``
    (every ``*.pub`` in it); ``keys_dir`` may also be a single ``.pub`` file.
    """
    if public_key:
        return [path for path in public_key.split(":") if path]
    if keys_dir:
        if os.path.isfile(keys_dir):
            return [keys_dir]
        return sorted(glob.glob(os.path.join(glob.escape(keys_dir), "*.pub")))
    return sorted(glob.glob(os.path.join(SYSTEM_KEYS_DIR, "*.pub")))


def load_master_keys(paths: Sequence[str]) -> List[rsa.RSAPublicKey]:
    if not paths:
        raise SignatureError(
            "no master public key found",
            hint="pass --keys KEYDIR or set CVMFS_KEYS_DIR / CVMFS_PUBLIC_KEY",
        )
    keys = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                keys.append(load_public_key(handle.read(), path))
        except OSError as err:
            raise SignatureError(f"cannot read public key {path}: {err.strerror}") from None
    return keys

