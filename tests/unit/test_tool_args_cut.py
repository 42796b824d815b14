"""Tool calls a token limit (or a content filter) cut short are not judged.

OpenAI answers a tool call with `max_tokens` too small for its arguments by stopping them
where the limit fell and `finish_reason: "length"`; Anthropic by `stop_reason: "max_tokens"`;
Responses by `response.incomplete` with `max_output_tokens`. The SDKs hand that reason to the
caller: nothing is broken, and one client with a low limit must not make a healthy canary look
bad (it counted `invalid_tool_arguments`, a bad anomaly to the guard). Calls completed before
the cut are judged as ever, and so is the same cut text under any other finish reason."""

from __future__ import annotations

import orjson
import pytest

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import Dialect
from sse_audit_proxy.core.dialects.anthropic import AnthropicMessages
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.dialects.responses import Responses

CUT = '{"city": "Par'  # arguments the limit cut
WHOLE = '{"city": "Paris"}'
BROKEN = '{"city": "Paris"'  # a call that finished, and is not JSON


def _data(doc: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(doc) + b"\n\n"


def _chat_call(choice: int, index: int, arguments: str) -> bytes:
    call = {
        "index": index,
        "id": f"call_{choice}_{index}",
        "type": "function",
        "function": {"name": "weather", "arguments": arguments},
    }
    return _data({"choices": [{"index": choice, "delta": {"tool_calls": [call]}, "finish_reason": None}]})


def _chat(calls: list[tuple[int, int, str]], reasons: dict[int, str]) -> bytes:
    body = b"".join(_chat_call(*c) for c in calls)
    for choice, reason in reasons.items():
        body += _data({"choices": [{"index": choice, "delta": {}, "finish_reason": reason}]})
    return body + b"data: [DONE]\n\n"


def _anthropic(arguments: list[str], stop: str) -> bytes:
    body = _data({"type": "message_start", "message": {"usage": {"input_tokens": 5}}}, "message_start")
    for i, text in enumerate(arguments):
        block = {"type": "tool_use", "id": f"toolu_{i}", "name": "weather", "input": {}}
        start = {"type": "content_block_start", "index": i, "content_block": block}
        body += _data(start, "content_block_start")
        delta = {"type": "input_json_delta", "partial_json": text}
        body += _data({"type": "content_block_delta", "index": i, "delta": delta}, "content_block_delta")
        body += _data({"type": "content_block_stop", "index": i}, "content_block_stop")
    delta = {"stop_reason": stop, "stop_sequence": None}
    body += _data({"type": "message_delta", "delta": delta, "usage": {"output_tokens": 5}}, "message_delta")
    return body + _data({"type": "message_stop"}, "message_stop")


def _responses(arguments: list[str], incomplete: bool) -> bytes:
    body = b""
    for i, text in enumerate(arguments):
        item = {"type": "function_call", "id": f"fc_{i}", "name": "weather", "arguments": ""}
        body += _data({"type": "response.output_item.added", "output_index": i, "item": item})
        body += _data(
            {
                "type": "response.function_call_arguments.delta",
                "output_index": i,
                "item_id": f"fc_{i}",
                "delta": text,
            }
        )
    usage = {"input_tokens": 5, "output_tokens": 5, "total_tokens": 10}
    if incomplete:
        details = {"reason": "max_output_tokens"}
        response = {"status": "incomplete", "incomplete_details": details, "usage": usage}
        return body + _data({"type": "response.incomplete", "response": response})
    return body + _data({"type": "response.completed", "response": {"status": "completed", "usage": usage}})


def _anomalies(dialect: Dialect, body: bytes) -> list[str]:
    audit = StreamAudit(dialect, 0.0)
    audit.feed(body, 0.1)
    result = audit.finish(0.2, End.UPSTREAM_EOF)
    return [str(a) for a in result.anomalies]


@pytest.mark.parametrize(
    ("body", "dialect", "invalid"),
    [
        # Chat: the cut call of a choice that finished `length` is spared...
        (_chat([(0, 0, CUT)], {0: "length"}), ChatCompletions, False),
        (_chat([(0, 0, CUT)], {0: "content_filter"}), ChatCompletions, False),
        # ... not under another reason, where the SDK hands over arguments that do not parse,
        (_chat([(0, 0, CUT)], {0: "tool_calls"}), ChatCompletions, True),
        (_chat([(0, 0, CUT)], {0: "stop"}), ChatCompletions, True),
        # ... nor a call that finished before the cut (parallel calls: the cut is in the last),
        (_chat([(0, 0, BROKEN), (0, 1, CUT)], {0: "length"}), ChatCompletions, True),
        (_chat([(0, 0, WHOLE), (0, 1, CUT)], {0: "length"}), ChatCompletions, False),
        # ... nor another choice's call (n=2: each choice finishes on its own).
        (_chat([(0, 0, CUT), (1, 0, CUT)], {0: "length", 1: "tool_calls"}), ChatCompletions, True),
        (_chat([(0, 0, CUT), (1, 0, CUT)], {0: "length", 1: "length"}), ChatCompletions, False),
        (_anthropic([CUT], "max_tokens"), AnthropicMessages, False),
        (_anthropic([CUT], "tool_use"), AnthropicMessages, True),
        (_anthropic([CUT], "refusal"), AnthropicMessages, False),  # the SDK hands over input={}
        (_anthropic([BROKEN, CUT], "max_tokens"), AnthropicMessages, True),
        (_anthropic([WHOLE, CUT], "max_tokens"), AnthropicMessages, False),
        (_responses([CUT], incomplete=True), Responses, False),
        (_responses([CUT], incomplete=False), Responses, True),
        (_responses([BROKEN, CUT], incomplete=True), Responses, True),
    ],
)
def test_a_call_cut_by_a_token_limit_is_not_judged_and_the_rest_are(
    body: bytes, dialect: type[Dialect], invalid: bool
) -> None:
    assert ("invalid_tool_arguments" in _anomalies(dialect(), body)) is invalid


def test_a_call_cut_before_any_argument_is_not_counted_empty() -> None:
    body = _chat([(0, 0, "")], {0: "length"})
    dialect = ChatCompletions()
    assert "invalid_tool_arguments" not in _anomalies(dialect, body)
    assert dialect.summary().empty_tool_arguments == 0
    assert ChatCompletions().summary().tool_calls == 0  # (a fresh dialect saw none)
