"""The repository manifest ``.cvmfspublished``: parse, verify, build and sign.

Pure functions over bytes (format notes §1).  The manifest names the root
catalog, the certificate and the history database; it is trusted only after
its hash line matches and the certificate's key verifies the signature.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Union

from uvm.cvmfs.hashing import Algorithm, ContentHash, Suffix
from uvm.cvmfs.head import DEFAULT_TTL
from uvm.errors import CvmfsError, ManifestError, SignatureError

# Parsing imports no signature code (``cryptography``): a cold start parses
# the manifest, and asks for what it names, while that code is still being
# imported (see ``uvm.cvmfs.client.open_repository``).
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from uvm.cvmfs.signature import SignedLetter

EMPTY_PATH_MD5 = hashlib.md5(b"").hexdigest()


class Manifest(NamedTuple):
    """The fields of a manifest that uvm uses or writes."""

    root_hash: ContentHash
    catalog_size: int
    revision: int
    ttl: int = DEFAULT_TTL
    root_path_md5: str = EMPTY_PATH_MD5
    garbage_collectable: bool = False
    alt_names: bool = False
    fqrn: Optional[str] = None
    certificate: Optional[ContentHash] = None
    history: Optional[ContentHash] = None
    timestamp: Optional[int] = None
    meta_info: Optional[ContentHash] = None

    @property
    def algorithm(self) -> Algorithm:
        return self.root_hash.algorithm


def parse_fields(body: bytes) -> Dict[str, str]:
    """Key/value lines as ``ParseKeyvalMem`` reads them, up to the ``--`` line."""
    fields: Dict[str, str] = {}
    start = 0
    while True:
        end = body.find(b"\n", start)
        if end < 0:
            break  # a last line without its newline is ignored
        line = body[start:end]
        start = end + 1
        if line == b"--":
            break
        if not line:
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(f"manifest line {line[:40]!r} is not UTF-8") from None
        key, value = text[0], text[1:]
        if key == "Z" and key in fields:
            fields[key] += "|" + value
        else:
            fields[key] = value
    return fields


def _hash(fields: Dict[str, str], key: str, required: bool = False) -> Optional[ContentHash]:
    value = fields.get(key)
    if value is None or value == "":
        if required:
            raise ManifestError(f"manifest lacks the required '{key}' line")
        return None
    try:
        return ContentHash.parse(value)
    except CvmfsError:
        raise ManifestError(
            f"manifest line '{key}' holds no content hash: {value[:60]!r}") from None


def _int(fields: Dict[str, str], key: str, required: bool = False, default: int = 0) -> int:
    value = fields.get(key)
    if value is None:
        if required:
            raise ManifestError(f"manifest lacks the required '{key}' line")
        return default
    try:
        return int(value)
    except ValueError:
        raise ManifestError(f"manifest line '{key}' is not a number: {value[:60]!r}") from None


def parse_manifest(body: bytes) -> Manifest:
    """Parse manifest text (signature block allowed; it is not looked at here)."""
    fields = parse_fields(body)
    root_hash = _hash(fields, "C", required=True)
    for key in ("R", "D", "S"):
        if key not in fields:
            raise ManifestError(f"manifest lacks the required '{key}' line")
    assert root_hash is not None
    return Manifest(
        root_hash=root_hash,
        catalog_size=_int(fields, "B"),
        revision=_int(fields, "S", required=True),
        ttl=_int(fields, "D", required=True),
        root_path_md5=fields["R"],
        garbage_collectable=fields.get("G") == "yes",
        alt_names=fields.get("A") == "yes",
        fqrn=fields.get("N"),
        certificate=_hash(fields, "X"),
        history=_hash(fields, "H"),
        timestamp=_int(fields, "T") if "T" in fields else None,
        meta_info=_hash(fields, "M"),
    )


def check_identity(manifest: Manifest, fqrn: str) -> None:
    """The checks the client makes before any signature: name and root path."""
    if manifest.fqrn != fqrn:
        raise ManifestError(
            f"manifest is for repository {manifest.fqrn!r}, not {fqrn!r}"
        )
    if manifest.root_path_md5 != EMPTY_PATH_MD5:
        raise ManifestError(
            f"manifest root path hash R={manifest.root_path_md5[:40]!r} is not MD5(\"\")"
        )
    if manifest.certificate is None:
        raise ManifestError("manifest names no certificate (no 'X' line)")


def verify_signature(data: bytes, key: rsa.RSAPublicKey) -> SignedLetter:
    """Check the hash line and the certificate key's signature over it."""
    from uvm.cvmfs import signature

    letter = signature.split_letter(data, "manifest")
    signature.check_letter_hash(letter, "manifest")
    if not signature.verify_pkcs1_sha1(key, letter.hash_text.encode("ascii"), letter.signature):
        raise SignatureError("manifest signature does not verify with the repository certificate")
    return letter


def first_objects(manifest: Manifest, tag: Optional[str] = None,
                  date: Union[None, str, int] = None,
                  root_hash: Union[None, str, ContentHash] = None) -> List[tuple]:
    """The catalog or tag database that opening a revision (the newest, or
    the one of ``tag``, ``date`` or ``root_hash``) reads first, as
    ``(hash, suffix, size or None, compressed)`` requests to fetch ahead."""
    if tag is not None or date is not None:
        return [(manifest.history, Suffix.HISTORY, None, True)] if manifest.history else []
    if root_hash is None or str(root_hash) == str(manifest.root_hash):
        return [(manifest.root_hash, Suffix.CATALOG, manifest.catalog_size or None, True)]
    return []


def render(manifest: Manifest) -> bytes:
    """The unsigned body, keys in the publisher's order ``C B R D S G A`` then ``N X H T M``."""
    lines = [
        f"C{manifest.root_hash}",
        f"B{manifest.catalog_size}",
        f"R{manifest.root_path_md5}",
        f"D{manifest.ttl}",
        f"S{manifest.revision}",
        "G" + ("yes" if manifest.garbage_collectable else "no"),
        "A" + ("yes" if manifest.alt_names else "no"),
    ]
    if manifest.fqrn is not None:
        lines.append(f"N{manifest.fqrn}")
    if manifest.certificate is not None:
        lines.append(f"X{manifest.certificate}")
    if manifest.history is not None:
        lines.append(f"H{manifest.history}")
    if manifest.timestamp is not None:
        lines.append(f"T{manifest.timestamp}")
    if manifest.meta_info is not None:
        lines.append(f"M{manifest.meta_info}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def sign(body: bytes, key: rsa.RSAPrivateKey, algorithm: Algorithm) -> bytes:
    """``body--\\nhash\\nsignature``: what ``cvmfs_swissknife sign`` writes."""
    from uvm.cvmfs import signature

    hash_text = signature.letter_hash_text(body, algorithm)
    sig = signature.sign_pkcs1_sha1(key, hash_text.encode("ascii"))
    return body + b"--\n" + hash_text.encode("ascii") + b"\n" + sig
