"""Edges an outside mutation review of the pure core found no test to hold (2026-12-05, a second
pass): tgi.py, native_lines.py, cohere_v1.py (self-contained helpers).
"""

from __future__ import annotations

from typing import Any

import orjson

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects import dialect_for_route
from sse_audit_proxy.core.guard import judge
from sse_audit_proxy.core.record import AuditRecord


def tgi(**doc: Any) -> bytes:
    return b"data:" + orjson.dumps(doc) + b"\n\n"


def tok(i: int, text: str, *, special: bool = False, last: str | None = None, details: Any = None) -> bytes:
    return tgi(
        index=i,
        token={"id": i, "text": text, "logprob": -0.1, "special": special},
        generated_text=last,
        details=details,
    )


def run(
    frames: list[bytes], route: str = "tgi", *, lines: bool = False, end: End = End.UPSTREAM_EOF
) -> StreamResult:
    a = StreamAudit(dialect_for_route(route)(), 0.0, event_stream=not lines, json_lines=lines)
    for i, f in enumerate(frames):
        a.feed(f, 0.1 * (i + 1))
    return a.finish(0.1 * len(frames) + 0.01, end)


def rec(route: str, r: StreamResult, status: int = 200) -> AuditRecord:
    return AuditRecord("t", route, "POST", "m", status, 0.0, 1.0, 0, r)


def test_tgi_first_frame_error_without_error_type_is_not_read_as_tgi() -> None:
    # TGI's error frames always carry error_type; a bare {"error": ...} on the path is not
    # known to be TGI's: read as on a route with no dialect (the guard then leaves it out).
    r = run([tgi(error="no such adapter")])
    assert r.outcome is Outcome.UPSTREAM_ERROR and r.read_as_other is True
    assert judge(rec("tgi", r)) is None


def test_tgi_first_frame_without_an_index_is_not_read_as_tgi() -> None:
    r = run(
        [
            tgi(token={"id": 1, "text": "Hi", "special": False}),
            tgi(token={"id": 2, "text": "!", "special": False}),
        ]
    )
    assert r.read_as_other is True and r.outcome is Outcome.COMPLETE


def test_tgi_last_frame_with_an_empty_generated_text_ends_the_stream() -> None:
    # A model that stops at once (EOS first): TGI's last frame has generated_text "".
    last = tok(
        1,
        "</s>",
        special=True,
        last="",
        details={"finish_reason": "eos_token", "generated_tokens": 1, "input_length": 4},
    )
    r = run([last])
    assert r.outcome is Outcome.COMPLETE and r.finish_reasons == ["eos_token"]


def test_tgi_a_frame_without_a_data_line_is_skipped_as_the_clients_do() -> None:
    r = run([tok(1, "Hi"), b"event: ping\n\n", tok(2, "!", last="Hi!", details={"finish_reason": "length"})])
    assert r.outcome is Outcome.COMPLETE and "malformed_frame" not in r.anomalies


def test_tgi_a_token_with_empty_text_is_not_content() -> None:
    # TGI's incremental detokenizer sends "" for a token that ends inside a UTF-8 character;
    # the first token the user sees is the next one.
    last = tok(3, "</s>", special=True, last="\u00e9!", details={"finish_reason": "eos_token"})
    r = run([tok(1, ""), tok(2, "\u00e9!"), last])
    assert r.content_frames == 1
    assert r.ttft is not None and abs(r.ttft - 0.2) < 1e-9


def test_tgi_details_without_input_length_still_count_generated_tokens() -> None:
    # TGI before 2.x (and LoRAX) sends StreamDetails without input_length.
    last = tok(2, "!", last="Hi!", details={"finish_reason": "length", "generated_tokens": 2, "seed": None})
    r = run([tok(1, "Hi"), last])
    assert r.outcome is Outcome.COMPLETE
    assert (r.prompt_tokens, r.completion_tokens) == (None, 2)
