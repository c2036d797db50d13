"""Password hashing, tokens and CSRF tokens as pure functions."""

from __future__ import annotations

import time
import unicodedata

import pytest

from webapp.domain.passwords import dummy_hash_sync as dummy_hash
from webapp.domain.passwords import hash_password_sync as hash_password
from webapp.domain.passwords import needs_rehash
from webapp.domain.passwords import verify_password_sync as verify_password
from webapp.web.csrf import csrf_token, csrf_token_matches
from webapp.web.tokens import InvalidToken, decode_token, derive_key, encode_token

ROUNDS = 4
KEY = derive_key(secret="s" * 40, purpose="jwt")


def test_a_hash_verifies_its_password_only():
    hashed = hash_password("correct horse", rounds=ROUNDS)
    assert verify_password("correct horse", password_hash=hashed)
    assert not verify_password("correct horsE", password_hash=hashed)


def test_every_byte_counts_past_bcrypts_72():
    base = "x" * 100
    hashed = hash_password(base + "a", rounds=ROUNDS)
    assert verify_password(base + "a", password_hash=hashed)
    assert not verify_password(base + "b", password_hash=hashed)


def test_the_longest_password_hashes_without_error():
    longest = "🔑" * 1024  # 4 KiB of UTF-8
    assert verify_password(longest, password_hash=hash_password(longest, rounds=ROUNDS))


def test_composed_and_decomposed_forms_are_one_password():
    composed = unicodedata.normalize("NFC", "café")
    decomposed = unicodedata.normalize("NFD", "café")
    assert composed != decomposed
    assert verify_password(decomposed, password_hash=hash_password(composed, rounds=ROUNDS))


def test_a_malformed_hash_is_a_mismatch_not_an_error():
    assert not verify_password("anything", password_hash="not a bcrypt hash")


def test_rehash_is_needed_when_the_cost_changes():
    hashed = hash_password("pw", rounds=ROUNDS)
    assert not needs_rehash(hashed, rounds=ROUNDS)
    assert needs_rehash(hashed, rounds=ROUNDS + 1)
    assert needs_rehash("garbage", rounds=ROUNDS)


def test_the_dummy_hash_has_the_configured_cost():
    assert dummy_hash(ROUNDS).startswith("$2b$04$")


def _token(**overrides: object) -> str:
    values: dict[str, object] = {
        "user_id": 7,
        "session_id": "sid",
        "key": KEY,
        "algorithm": "HS256",
        "issuer": "iss",
        "audience": "aud",
        "now": int(time.time()),
        "lifetime": 3600,
    }
    values.update(overrides)
    return encode_token(**values)  # type: ignore[arg-type]


def _decode(token: str, **overrides: object):
    values: dict[str, object] = {
        "key": KEY,
        "algorithm": "HS256",
        "issuer": "iss",
        "audience": "aud",
        "lifetime": 3600,
    }
    values.update(overrides)
    return decode_token(token, **values)  # type: ignore[arg-type]


def test_a_token_round_trips():
    claims = _decode(_token())
    assert (claims.user_id, claims.session_id) == (7, "sid")
    assert claims.expires_at - claims.issued_at == 3600


def test_every_token_has_its_own_id():
    assert _decode(_token()).token_id != _decode(_token()).token_id


@pytest.mark.parametrize(
    "overrides",
    [
        {"key": derive_key(secret="o" * 40, purpose="jwt")},
        {"algorithm": "HS384"},
        {"issuer": "other"},
        {"audience": "other"},
        # Seconds from the moment the token is made, not from when the module was collected:
        # a suite that takes long must not turn "issued in the future" into the past.
        {"now_offset": -3601},
        {"now_offset": 120},
    ],
)
def test_tokens_not_ours_are_refused(overrides):
    if "now_offset" in overrides:
        overrides = {"now": int(time.time()) + overrides["now_offset"]}
    with pytest.raises(InvalidToken):
        _decode(_token(**overrides))


def test_garbage_is_refused():
    for garbage in ("", "a.b.c", "not a token", "e30.e30."):
        with pytest.raises(InvalidToken):
            _decode(garbage)


def test_keys_are_separated_by_purpose():
    assert derive_key(secret="s" * 40, purpose="jwt") != derive_key(secret="s" * 40, purpose="csrf")
    assert len(KEY) == 64


def test_csrf_tokens_bind_browser_and_session():
    key = derive_key(secret="s" * 40, purpose="csrf")
    guest = csrf_token(key=key, browser_id="b1", session_id=None)
    signed_in = csrf_token(key=key, browser_id="b1", session_id="s1")
    assert guest != signed_in
    assert csrf_token_matches(signed_in, key=key, browser_id="b1", session_id="s1")
    assert not csrf_token_matches(signed_in, key=key, browser_id="b2", session_id="s1")
    assert not csrf_token_matches(signed_in, key=key, browser_id="b1", session_id="s2")
    assert not csrf_token_matches(guest, key=key, browser_id="b1", session_id="s1")
    assert not csrf_token_matches("ünïcode", key=key, browser_id="b1", session_id=None)


def test_the_access_log_filter_redacts_only_link_tokens():
    import logging

    from webapp.web.logs import RedactTokens

    def line(path: str) -> str:
        record = logging.LogRecord(
            "uvicorn.access",
            20,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("1.2.3.4:5", "GET", path, "1.1", 200),
            None,
        )
        RedactTokens().filter(record)
        return record.getMessage()

    assert "/password-reset/[token]" in line("/password-reset/abcDEF123_-")
    assert "/verify-email/[token]?x=1" in line("/verify-email/secret?x=1")
    assert "/email-revert/[token]" in line("/email-revert/s3cr3t")
    assert "secret" not in line("/verify-email/secret")
    # Other paths are left alone, the bare reset page included.
    assert "/password-reset " in line("/password-reset")
    assert "/sessions/abc" in line("/sessions/abc")
