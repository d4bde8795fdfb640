"""Verifying Flagsmith's `X-Flagsmith-Signature`: a pure module, no web framework inside.

Flagsmith signs the exact body bytes it sends with HMAC-SHA256 and puts the lowercase hex digest,
with no prefix and no timestamp, in the header. We check the header's shape first, then compare
digests as bytes in constant time against every configured secret (rotation). Every failure is a
`SignatureError` with a short machine-readable reason; nothing else escapes.

Decisions (tested in tests/test_signature.py):
- Uppercase hex is accepted: hex case carries no information, and the digest compared is the same.
- A `sha256=` prefix (GitHub's style) is refused as malformed: Flagsmith never sends one, so a
  prefixed header means a different sender or a relay that rewrote the request.
- Surrounding whitespace is stripped (proxies fold headers); anything else non-hex is malformed.
- Two headers joined by a proxy (`a, b`) are malformed, never "either one verifies".
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

HEADER = "X-Flagsmith-Signature"
_HEX_DIGITS = frozenset(b"0123456789abcdef")
_DIGEST_HEX_LENGTH = 64


class SignatureError(Exception):
    """The request is not proven to come from Flagsmith. `reason` is safe to log and count."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    """Which secret verified the body: its position and a fingerprint, never the secret itself."""

    secret_index: int
    secret_fingerprint: str


@functools.lru_cache(maxsize=64)
def secret_fingerprint(secret: bytes) -> str:
    """A short, stable identity for a secret that reveals nothing useful about it."""
    return hashlib.sha256(b"flagsmith-warehouse secret id:" + secret).hexdigest()[:12]


def sign(body: bytes, secret: bytes) -> str:
    """The header value Flagsmith sends for `body`."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


# CPython's hashlib lets go of the GIL while hashing any piece of 2,048 bytes or more. For a
# webhook body that is ten microseconds of hashing, and under load each let-go hands the GIL to
# another request thread and back, two thread switches that cost more than the hashing. Pieces
# just under that size keep the GIL; bodies past _KEEP_GIL_UP_TO are hashed in one piece.
_UNDER_GIL_RELEASE = 2047
_KEEP_GIL_UP_TO = 64 * 1024


def _hmac_hex(secret: bytes, body: bytes) -> bytes:
    if len(body) > _KEEP_GIL_UP_TO:
        return hmac.new(secret, body, hashlib.sha256).hexdigest().encode("ascii")
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    view = memoryview(body)
    for start in range(0, len(view), _UNDER_GIL_RELEASE):
        mac.update(view[start : start + _UNDER_GIL_RELEASE])
    return mac.hexdigest().encode("ascii")


def _parse_header(header: str | bytes | None) -> bytes:
    if header is None:
        raise SignatureError("missing_signature")
    try:
        raw = header.encode("ascii") if isinstance(header, str) else bytes(header)
    except (UnicodeEncodeError, TypeError):
        raise SignatureError("malformed_signature") from None
    raw = raw.strip()
    if not raw:
        raise SignatureError("missing_signature")
    raw = raw.lower()
    if len(raw) != _DIGEST_HEX_LENGTH or not _HEX_DIGITS.issuperset(raw):
        raise SignatureError("malformed_signature")
    return raw


def verify(body: bytes, header: str | bytes | None, secrets: Sequence[bytes]) -> Verified:
    """Return which secret signed `body`, or raise `SignatureError`.

    Every secret is tried (no early exit on the first match) so the time taken does not depend on
    which secret matched.
    """
    if not secrets:
        raise SignatureError("no_secret_configured")
    expected = _parse_header(header)
    matched: int | None = None
    for index, secret in enumerate(secrets):
        digest = _hmac_hex(secret, body)
        if hmac.compare_digest(digest, expected) and matched is None:
            matched = index
    if matched is None:
        raise SignatureError("invalid_signature")
    return Verified(matched, secret_fingerprint(secrets[matched]))
