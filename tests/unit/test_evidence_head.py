"""What a record keeps of a response head reads, as evidence, exactly as the head does, and
stays small whatever the upstream sent (a record waits in the recent-streams buffer: 1,000
records of 64 KiB heads once held 58 MiB)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.sinks.evidence import KEEP_HEAD_BYTES, MAX_HEADER_VALUE, kept_head, redacted_headers
from sse_audit_proxy.sinks.redaction import Redactor

_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=12) | st.sampled_from(
    ["x" * 70000, " a b " * 300, "Bearer sk-" + "k" * 40, "v" * (MAX_HEADER_VALUE - 1) + " w"]
)
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
