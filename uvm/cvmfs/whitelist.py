"""The certificate whitelist ``.cvmfswhitelist``: parse, verify, build and sign.

Pure functions over bytes (format notes §2).  The whitelist ties the
repository certificate to a master key for a limited time: it lists the
certificate's fingerprint, names the repository and expires.
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, NamedTuple, Optional, Sequence, Tuple

from uvm.cvmfs.hashing import Algorithm, ContentHash
from uvm.errors import SignatureError, WhitelistError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

# ``uvm.cvmfs.signature`` (and with it ``cryptography``, 40-60 ms of start-up)
# is imported by the functions that verify or sign: :func:`expiry` is also
# called where nothing is verified (``uvm.cvmfs.head``).

DEFAULT_DAYS = 30
_STAMP = "%Y%m%d%H%M%S"


class Whitelist(NamedTuple):
    created: str
    expires: _dt.datetime
    fqrn: str
    fingerprints: Tuple[ContentHash, ...]
    requires_ca_chain: bool = False
    pkcs7: bool = False


def _parse_stamp(text: str, what: str) -> _dt.datetime:
    """``YYYYMMDDhhmmss`` in UTC, fixed width (by hand: ``strptime`` would
    import ``_strptime`` and ``locale``, 3 ms of every run past the TTL)."""
    try:
        if len(text) != 14 or not (text.isascii() and text.isdigit()):
            raise ValueError
        return _dt.datetime(int(text[:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]),
                            int(text[10:12]), int(text[12:]), tzinfo=_dt.timezone.utc)
    except ValueError:
        raise WhitelistError(f"whitelist {what} {text!r} is not YYYYMMDDhhmmss") from None


def expiry(data: bytes) -> _dt.datetime:
    """The expiry stamp alone (second line); nothing is verified."""
    lines = data.split(b"\n", 2)
    line = lines[1].decode("ascii", "replace") if len(lines) > 2 else ""
    if len(line) != 15 or not line.startswith("E"):
        raise WhitelistError(f"whitelist expiry line {line[:20]!r} is malformed")
    return _parse_stamp(line[1:], "expiry")


def parse(body: bytes) -> Whitelist:
    """Parse the text part (the signature block may follow; it is ignored here)."""
    from uvm.cvmfs import signature

    text = body.split(b"\n--\n", 1)[0].decode("utf-8", "replace")
    lines = text.split("\n")
    if len(lines) < 3:
        raise WhitelistError("whitelist is truncated")
    created, expiry, name = lines[0], lines[1], lines[2]
    if len(created) != 14:
        raise WhitelistError(f"whitelist creation time {created[:20]!r} is malformed")
    if len(expiry) != 15 or not expiry.startswith("E"):
        raise WhitelistError(f"whitelist expiry line {expiry[:20]!r} is malformed")
    if not name.startswith("N"):
        raise WhitelistError(f"whitelist repository line {name[:40]!r} is malformed")
    fingerprints = []
    cachain = pkcs7 = False
    for line in lines[3:]:
        if line == "Vpkcs7":
            pkcs7 = True
        elif line == "Wcachain":
            cachain = True
        else:
            parsed = signature.parse_fingerprint(line)
            if parsed is not None:
                fingerprints.append(parsed)
    return Whitelist(
        created=created,
        expires=_parse_stamp(expiry[1:], "expiry"),
        fqrn=name[1:],
        fingerprints=tuple(fingerprints),
        requires_ca_chain=cachain,
        pkcs7=pkcs7,
    )


def is_expired(expires: _dt.datetime, now: _dt.datetime) -> bool:
    """Valid only while ``now`` is strictly before the expiry *hour* (§2.1)."""
    hour = expires.replace(minute=0, second=0, microsecond=0)
    now_hour = now.astimezone(_dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    return not now_hour < hour


def verify(
    data: bytes,
    master_keys: Sequence[rsa.RSAPublicKey],
    fqrn: str,
    certificate_der: Optional[bytes] = None,
    now: Optional[_dt.datetime] = None,
) -> Whitelist:
    """Hash line, master-key signature, name, expiry and (optionally) the certificate."""
    from uvm.cvmfs import signature

    letter = signature.split_letter(data, "whitelist")
    signature.check_letter_hash(letter, "whitelist")
    hash_text = letter.hash_text.encode("ascii")
    if not signature.verify_raw_pkcs1(master_keys, hash_text, letter.signature):
        raise SignatureError("whitelist signature does not verify with any master public key")
    whitelist = parse(letter.body)
    if whitelist.fqrn != fqrn:
        raise WhitelistError(f"whitelist is for repository {whitelist.fqrn!r}, not {fqrn!r}")
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if is_expired(whitelist.expires, now):
        raise WhitelistError(
            f"whitelist of {fqrn} expired at {whitelist.expires:%Y-%m-%d %H:%M} UTC",
            hint="the publisher must re-sign it",
        )
    if certificate_der is not None:
        check_certificate(whitelist, certificate_der)
    return whitelist


def check_certificate(whitelist: Whitelist, certificate_der: bytes) -> None:
    """The certificate's fingerprint, in each algorithm the whitelist uses, must be listed."""
    if whitelist.requires_ca_chain:
        raise WhitelistError(
            "whitelist requires X.509 CA-chain verification, which uvm does not do")
    for listed in whitelist.fingerprints:
        if ContentHash.of(certificate_der, listed.algorithm) == listed:
            return
    sha1 = ContentHash.of(certificate_der, Algorithm.SHA1)
    raise WhitelistError(
        f"repository certificate (SHA-1 fingerprint {sha1}) is not in the whitelist of "
        f"{whitelist.fqrn}"
    )


def render(fqrn: str, fingerprint: str, created: _dt.datetime, days: int) -> bytes:
    """The unsigned body as ``create_whitelist`` writes it."""
    created = created.astimezone(_dt.timezone.utc)
    expires = created + _dt.timedelta(days=days)
    return (
        f"{created:{_STAMP}}\nE{expires:{_STAMP}}\nN{fqrn}\n{fingerprint}\n"
    ).encode("ascii")


def sign(body: bytes, master_key: rsa.RSAPrivateKey, algorithm: Algorithm) -> bytes:
    from uvm.cvmfs import signature

    hash_text = signature.letter_hash_text(body, algorithm)
    sig = signature.sign_raw_pkcs1(master_key, hash_text.encode("ascii"))
    return body + b"--\n" + hash_text.encode("ascii") + b"\n" + sig
