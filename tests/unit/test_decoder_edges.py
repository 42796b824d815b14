"""Edges an outside mutation review of the pure core (a second pass, 125 mutants) found no test to
hold: decoder-corner mutants (sse.py, json_lines.py) and tool_args bounds.
"""

from __future__ import annotations

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import dialect_for_route
from sse_audit_proxy.core.sse import SSEDecoder


def test_a_body_that_ends_inside_a_comment_line_left_a_frame_unterminated() -> None:
    # The upstream's last bytes were half a keep-alive (": kee", no LF): the log's
    # unterminated_frame says the body stopped mid-frame.
    a = StreamAudit(dialect_for_route("other")(), 0.0)
    a.feed(b'data: {"x": 1}\n\n', 0.1)
    a.feed(b": kee", 0.2)
    r = a.finish(0.3, End.UPSTREAM_EOF)
    assert r.unterminated_frame is True
    d = SSEDecoder(1 << 20)
    d.feed(b": ping")
    assert d.close() is True


def test_tool_arguments_of_exactly_the_cap_are_still_judged() -> None:
    from sse_audit_proxy.core.dialects.tool_args import MAX_TOOL_ARG_BYTES, ToolArgs

    t = ToolArgs()
    t.open("k")
    t.append("k", '{"a": "' + "x" * (MAX_TOOL_ARG_BYTES - 7))  # exactly the cap, not JSON
    assert t.invalid() == 1


def test_the_rest_of_a_split_comment_line_is_not_read_as_a_data_frame() -> None:
    # A comment line split across reads (": note " + "data: x\n\n"): the second read ends the
    # comment line, so no event is dispatched (the fast path must not take it).
    d = SSEDecoder(1 << 20)
    assert d.feed(b": note ") == []
    assert d.feed(b"data: x\n\n") == []


def test_a_json_lines_body_that_stops_inside_an_oversized_line_is_unterminated() -> None:
    from sse_audit_proxy.core.json_lines import JsonLinesDecoder

    d = JsonLinesDecoder(1024)
    d.feed(b'{"a":1}\n{"b":"' + b"x" * 3000)
    assert d.close() is True
