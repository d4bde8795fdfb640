from __future__ import annotations

import pytest

from loader.signature import SignatureError, _hmac_hex, secret_fingerprint, sign, verify

from .conftest import SECRET, shared_examples

EXAMPLES = shared_examples()


@pytest.mark.parametrize(("name", "body", "signature"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_real_flagsmith_bodies_verify(name, body, signature):
    verified = verify(body, signature, [SECRET])
    assert verified.secret_index == 0
    assert sign(body, SECRET) == signature


@pytest.mark.parametrize(("name", "body", "signature"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_rejects_one_flipped_byte(name, body, signature):
    for position in (0, len(body) // 2, len(body) - 1):
        tampered = bytearray(body)
        tampered[position] ^= 0x01
        with pytest.raises(SignatureError) as error:
            verify(bytes(tampered), signature, [SECRET])
        assert error.value.reason == "invalid_signature"


def test_rejects_missing_header():
    with pytest.raises(SignatureError) as error:
        verify(b"{}", None, [SECRET])
    assert error.value.reason == "missing_signature"


def test_rejects_empty_header():
    with pytest.raises(SignatureError) as error:
        verify(b"{}", "  ", [SECRET])
    assert error.value.reason == "missing_signature"


def test_rejects_wrong_secret():
    _, body, signature = EXAMPLES[0]
    with pytest.raises(SignatureError) as error:
        verify(body, signature, [b"not-the-secret"])
    assert error.value.reason == "invalid_signature"


def test_any_secret_of_a_rotation_verifies_and_is_identified():
    _, body, signature = EXAMPLES[0]
    verified = verify(body, signature, [b"new-secret", SECRET])
    assert verified.secret_index == 1
    assert verified.secret_fingerprint == secret_fingerprint(SECRET)
    assert SECRET.decode() not in verified.secret_fingerprint


def test_rejects_when_no_secret_is_configured():
    with pytest.raises(SignatureError) as error:
        verify(b"{}", sign(b"{}", SECRET), [])
    assert error.value.reason == "no_secret_configured"


def test_accepts_uppercase_hex():
    _, body, signature = EXAMPLES[0]
    assert verify(body, signature.upper(), [SECRET]).secret_index == 0


@pytest.mark.parametrize(
    "header",
    [
        "sha256=" + sign(b"{}", SECRET),
        sign(b"{}", SECRET)[:-1],
        sign(b"{}", SECRET) + "0",
        "g" * 64,
        "é" * 64,
        sign(b"{}", SECRET) + ", " + sign(b"{}", SECRET),
    ],
    ids=["sha256-prefix", "truncated", "too-long", "non-hex", "non-ascii", "sent-twice"],
)
def test_rejects_malformed_header(header):
    with pytest.raises(SignatureError) as error:
        verify(b"{}", header, [SECRET])
    assert error.value.reason == "malformed_signature"


def test_header_as_bytes_with_invalid_utf8_is_malformed_not_a_crash():
    with pytest.raises(SignatureError) as error:
        verify(b"{}", b"\xff" * 64, [SECRET])
    assert error.value.reason == "malformed_signature"


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 4421, 64 * 1024, 64 * 1024 + 1, 300_000])
def test_hashing_in_pieces_gives_the_one_piece_digest(size):
    body = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert _hmac_hex(b"s3cr3t", body) == sign(body, b"s3cr3t").encode("ascii")
