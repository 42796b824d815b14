"""A request's own credentials, looked for where an upstream or the client could show them."""

from __future__ import annotations

import pytest

from sse_audit_proxy.core.credentials import credentials_in, holds_key, shows_credential
from sse_audit_proxy.core.request_info import model_name, trace_id_from
from sse_audit_proxy.sinks.redaction import Redactor


def test_credentials_are_whole_values_scheme_tokens_and_secret_cookies_longest_first() -> None:
    found = credentials_in(
        [
            ("authorization", "Bearer gw-tenant-7f3a9c1e"),
            ("cookie", "session=s1; csrftoken=COOKIEVALUE42; theme=dark-mode-on"),
            ("api-key", " 9f8e7d6c5b4a3928 "),
        ],
        Redactor().is_secret_name,
    )
    assert found == sorted(found, key=len, reverse=True)
    plain = {c for c in found if "%" not in c and "+" not in c}
    assert plain == {
        "Bearer gw-tenant-7f3a9c1e",
        "gw-tenant-7f3a9c1e",
        "COOKIEVALUE42",
        "9f8e7d6c5b4a3928",
    }  # `s1`: too short to be a key; `theme`'s: a preference, not a secret; nor the whole field
    # As a URL or a form carries them: an upstream that echoes one percent-encoded.
    assert {"Bearer%20gw-tenant-7f3a9c1e", "Bearer+gw-tenant-7f3a9c1e"} <= set(found)


def test_a_trace_id_that_shows_the_requests_own_key_is_not_taken() -> None:
    key = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"  # Azure's shape: 32 hex digits, like a trace ID
    own = credentials_in([("api-key", key)])
    for sent in (key, f"req-{key}", key[:16]):
        assert trace_id_from({"X-Request-Id": sent}, lambda: "new", own) == ("new", None), sent
    assert trace_id_from({"X-Request-Id": "req-1234"}, lambda: "new", own) == ("req-1234", "X-Request-Id")
    assert shows_credential(key, own) and not shows_credential("9f8e", own)  # too short a part


@pytest.mark.parametrize(
    "text", ["req1sk-" + "A1b2C3d4" * 6, "prodsk-" + "xY" * 20 + "7" + "y" * 7, "gptsk-proj-" + "Ab3_" * 12]
)
def test_a_legacy_key_glued_to_a_word_is_a_key(text: str) -> None:
    assert holds_key(text)
    assert model_name(text) != text
    assert "sk-" not in Redactor().scrub(f"model {text} failed")


@pytest.mark.parametrize(
    "text",
    [
        "task-list-for-the-assistant-and-more",
        "disk-usage-report",
        "tasksk-overview",
        # A second review: a word ending in `sk` before an ID or a deployment name.
        "task-ae75e61b-1234-4567-8901-abcdefabcdef",
        "kiosk-assistant-gpt-4o-mini-2024-07-18",
        "risk-assessment-llama-3-1-8b-instruct-v2",
        "desk-" + "a1b2c3d4" * 6,
    ],
)
def test_words_ending_in_sk_are_not_keys(text: str) -> None:
    assert not holds_key(text)
    assert Redactor().scrub(text) == text


def test_header_bytes_that_are_not_utf8_are_credentials_as_they_came() -> None:
    key = b"caf\xc3\xff-secret-1234".decode("utf-8", "surrogateescape")  # as the server reads it
    found = credentials_in([("api-key", key)])
    assert key in found  # and no UnicodeEncodeError: a 500 for every such client, once
    assert all(c.encode("utf-8", "surrogateescape") for c in found)


def test_a_cookie_of_preferences_or_a_correlation_id_blocks_no_model_or_trace_id() -> None:
    """The whole Cookie field counted, so `last_model=gpt-4o-mini` turned the model label into
    `[redacted]`; an Idempotency-Key equal to the trace ID replaced it (second review)."""
    own = credentials_in(
        [("cookie", "theme=dark; last_model=gpt-4o-mini; rid=0123456789abcdef")], Redactor().is_secret_name
    )
    assert own == []
    assert not shows_credential("gpt-4o-mini", own)
    assert trace_id_from({"X-Request-Id": "0123456789abcdef"}, lambda: "new", own) == (
        "0123456789abcdef",
        "X-Request-Id",
    )
