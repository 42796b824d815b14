"""What a record keeps of a response head reads, as evidence, exactly as the head does, and
stays small whatever the upstream sent (a record waits in the recent-streams buffer: 1,000
records of 64 KiB heads once held 58 MiB)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.sinks.evidence import (
    KEEP_HEAD_BYTES,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    is_notable,
    kept_head,
    redacted_headers,
)
from sse_audit_proxy.sinks.redaction import Redactor

_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=12) | st.sampled_from(
    ["x" * 70000, " a b " * 300, "Bearer sk-" + "k" * 40, "v" * (MAX_HEADER_VALUE - 1) + " w"]
)
_RESULT = StreamAudit(ChatCompletions(), 0.0).finish(1.0, End.UPSTREAM_EOF)
_LINE = st.tuples(_TEXT, st.sampled_from([": ", ":", " : ", ""]), _TEXT).map(lambda t: "".join(t))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3) | st.just("R" * 70000), st.lists(_LINE, max_size=80))
def test_the_kept_head_reads_as_the_head_and_is_small(reason: str, lines: list[str]) -> None:
    head = "\r\n".join([f"HTTP/1.1 200 {reason}", *lines, "", ""]).encode("latin-1", "replace")
    redactor = Redactor(["x-secret"])
    kept = kept_head(head)
    assert redacted_headers(kept, redactor) == redacted_headers(head, redactor)
    assert len(kept) <= max(len(head) if len(head) <= KEEP_HEAD_BYTES else 0, 2 * KEEP_HEAD_BYTES)


def test_each_routes_replay_path_is_its_own() -> None:
    """Evidence gives a replay a path per route: one its route is read from again, and for
    the native APIs their own (on Ollama's server `/v1/api/chat` is no native route; second
    pass)."""
    from sse_audit_proxy.core.dialects import route_for_path
    from sse_audit_proxy.sinks.evidence import ROUTE_PATHS

    assert all(route_for_path(path) == route for route, path in ROUTE_PATHS.items())
    assert (ROUTE_PATHS["ollama"], ROUTE_PATHS["cohere_chat"]) == ("/api/chat", "/v2/chat")
    assert ROUTE_PATHS["chat_completions"] == "/v1/chat/completions"


def test_evidence_shows_at_most_max_headers_fields() -> None:
    """600 short fields fit the byte budget: the count bound holds them to MAX_HEADERS, or each
    would be in every evidence line, file and page (a third mutation review)."""
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-h%d: v\r\n" % i for i in range(600)) + b"\r\n"
    assert len(redacted_headers(kept_head(head), Redactor())) == MAX_HEADERS


@pytest.mark.parametrize(
    ("outcome", "anomalies", "notable"),
    [("complete", [], False), ("complete", ["missing_usage"], True), ("truncated", [], True)],
)
def test_an_anomalous_complete_stream_is_notable(outcome: str, anomalies: list[str], notable: bool) -> None:
    """logs.md promises a `stream_evidence` line for every stream that is anomalous or not
    complete: a complete stream missing its usage had none with the anomaly test dropped."""
    stream = dataclasses.replace(_RESULT, outcome=Outcome(outcome), anomalies=anomalies)
    rec = AuditRecord("t", "chat_completions", "POST", "m", 200, 0.0, 1.0, 0, stream)
    assert is_notable(rec) is notable


def test_only_fields_evidence_knows_show_their_values_and_a_cut_leaves_no_part_of_a_key() -> None:
    """Evidence showed any response field's value with credentials scrubbed by their shapes: an
    upstream echoing the prompt in a debug field, a `pass=` pair, a private key or a key cut at
    512 characters (its pattern no longer matching) reached the evidence, its log line and the
    inspector (an outside review). Other fields' values are their lengths now; names are
    scrubbed too."""
    pem = "-----BEGIN PRIVATE KEY-----MIIEvQIBADANBgkqhkiG9w0BAQEFAASC-----END PRIVATE KEY-----"
    fields = [
        ("X-Echo-Prompt", "tell me the password PROMPTMARK"),
        ("X-Debug", "pass=hunter2; user password is PWMARK"),
        ("X-Cert", pem),
        ("X-Dbg-AKIAIOSFODNN7EXAMPLE", "1"),
        ("Location", "https://gw.example/cb?prompt=LOCPROMPTMARK#frag"),
        ("Server", "x" * 495 + " AKIAIOSFODNN7EXAMPLE"),  # the key straddles the cut at 512
        ("LLM_Provider-X-Request-Id", "req_42"),  # LiteLLM's copy of its upstream's field
        # A vendor's prefix is no kind of field (the second pass over this fix)
        ("X-Litellm-Debug", "pass=hunter2 my prompt"),
        ("Content-Location", "https://app.example/cb;jsessionid=ABCDEF0123456789#q=my%20prompt?x"),
        ("X-Request-Id", "r" * 600),  # one token longer than the cut: its length, not ""
        ("X-Debug-Long", "d" * 600),
        ("x-ratelimit-remaining-tokens", "29000"),
        ("Content-Type", "text/event-stream; charset=utf-8"),
    ]
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in fields) + b"\r\n"
    shown = dict(map(tuple, redacted_headers(head, Redactor())))
    text = repr(shown)
    for secret in (
        "PROMPTMARK",
        "hunter2",
        "PWMARK",
        "MIIEvQ",
        "AKIA",
        "IOSFODNN7E",
        "LOCPROMPTMARK",
        "frag",
        "prompt",
        "ABCDEF",
    ):
        assert secret not in text, (secret, shown)
    assert shown["X-Echo-Prompt"] == "<31>" and shown["X-Cert"] == f"<{len(pem)}>"
    assert shown["X-Dbg-[redacted]"] == "<1>"
    assert shown["Location"] == "https://gw.example/cb?<25>"  # the query and fragment: their length
    assert shown["Server"] == "x" * 495
    assert shown["LLM_Provider-X-Request-Id"] == "req_42"
    assert shown["X-Litellm-Debug"] == "<22>"
    assert shown["Content-Location"] == "https://app.example/cb;<43>"
    assert shown["X-Request-Id"] == shown["X-Debug-Long"] == "<600>"
    assert shown["x-ratelimit-remaining-tokens"] == "29000"
    assert shown["Content-Type"] == "text/event-stream; charset=utf-8"
