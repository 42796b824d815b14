"""A planned answer in the OpenAI wire shapes: JSON bodies and SSE frames. Pure.

Streams come back in parts (`Frames`) so the gateway can time them: what is sent as soon as
the response starts, one write per token or argument fragment, and the tail. `Shape` says
which of the normal frames a scenario leaves out or spoils; the renderer applies it, so the
frames that are sent are always consistent (Responses `sequence_number`s never skip).

Content frames are built by concatenating a per-stream prefix and suffix around the
JSON-encoded token: the gateway is the benchmark's upstream and must stay cheap per frame.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import orjson

from sse_audit_proxy.tools.gateway.plan import Plan

DONE = b"data: [DONE]\n\n"
FINGERPRINT = "fp_demo"


@dataclass(slots=True, frozen=True)
class Shape:
    """Which normal frames a stream carries, and what goes wrong in it."""

    finish: bool = True  # the finish_reason (Responses: the `.done` events)
    usage: bool = True  # the usage the client asked for
    done: bool = True  # `data: [DONE]` (Chat Completions, Completions)
    usage_extra: int = 0  # completion tokens added to the streamed usage only
    error_at: int | None = None  # after this many content writes: an error frame, then end
    rate_limited: bool = False  # the error is LiteLLM's: a rate limit as a bare {"error"} frame
    malformed_at: int | None = None  # before this content write: a frame that is not JSON


@dataclass(slots=True)
class Frames:
    start: bytes  # sent as soon as the response starts
    content: list[bytes]  # one write per token or fragment; the first carries opening frames
    tail: bytes  # after the last content write


def new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def _error(message: str, type_: str, code: str) -> dict[str, Any]:
    return {"message": message, "type": type_, "param": None, "code": code}


MIDSTREAM_ERROR = _error(
    "The demo gateway failed while generating (scenario error-midstream).", "server_error", "internal_error"
)
# What LiteLLM sends when the provider fails mid-stream, on every route: no `type`, no [DONE].
RATE_LIMITED = _error(
    "Rate limit reached while streaming (scenario error-no-done).", "rate_limit_error", "rate_limit_exceeded"
)
MALFORMED = b'data: {"choices": [{"delta": {"content": "unterminated\n\n'


def _frame(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _event(name: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def _apply(shape: Shape, content: list[bytes]) -> list[bytes]:
    if shape.malformed_at is not None and content:
        i = min(shape.malformed_at, len(content) - 1)
        content[i] = MALFORMED + content[i]
    if shape.error_at is not None:
        del content[max(1, shape.error_at) :]
    return content


# Chat Completions --------------------------------------------------------------------------


def chat_body(plan: Plan, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": plan.text or None,
        "refusal": None,
        "annotations": [],
    }
    if plan.tool_call:
        call = plan.tool_call
        message["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
        ]
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}],
        "usage": plan.usage(),
    }


def _chunk_head(id_prefix: str, object_: str, model: str) -> bytes:
    """The opening of every chunk of one stream: `{"id":...,"system_fingerprint":...` (open)."""
    return orjson.dumps(
        {
            "id": new_id(id_prefix),
            "object": object_,
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }
    )[:-1]


def _choices_stream(
    head: bytes, content: list[bytes], finish: bytes, plan: Plan, include_usage: bool, shape: Shape
) -> Frames:
    """The shared ending of Chat and Completions streams: finish chunk, usage, `[DONE]`."""
    content = _apply(shape, content)
    if shape.error_at is not None:
        error = RATE_LIMITED if shape.rate_limited else MIDSTREAM_ERROR
        return Frames(b"", content, _frame({"error": error}) + (DONE if shape.done else b""))
    tail = finish if shape.finish else b""
    if include_usage and shape.usage:
        tail += (
            b"data: "
            + head
            + b',"choices":[],"usage":'
            + orjson.dumps(plan.usage(shape.usage_extra))
            + b"}\n\n"
        )
    if shape.done:
        tail += DONE
    return Frames(b"", content, tail)


def chat_stream(plan: Plan, model: str, *, include_usage: bool, shape: Shape) -> Frames:
    head = _chunk_head("chatcmpl-", "chat.completion.chunk", model)
    prefix = b"data: " + head + b',"choices":[{"index":0,"delta":'
    usage_null = b',"usage":null' if include_usage else b""
    suffix = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
    dumps = orjson.dumps
    call = plan.tool_call
    if call is None:
        role = prefix + b'{"role":"assistant","content":"","refusal":null}' + suffix
        content = [prefix + b'{"content":' + dumps(t) + b"}" + suffix for t in plan.tokens]
    else:
        opening = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
            ],
        }
        role = prefix + dumps(opening) + suffix
        content = [
            prefix + b'{"tool_calls":[{"index":0,"function":{"arguments":' + dumps(f) + b"}}]}" + suffix
            for f in call.fragments
        ]
    if content:
        content[0] = role + content[0]
    finish = (
        prefix
        + b'{},"logprobs":null,"finish_reason":'
        + dumps(plan.finish_reason)
        + b"}]"
        + usage_null
        + b"}\n\n"
    )
    return _choices_stream(head, content, finish, plan, include_usage, shape)


# Legacy Completions ------------------------------------------------------------------------


def completions_body(plan: Plan, model: str) -> dict[str, Any]:
    return {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"text": plan.text, "index": 0, "logprobs": None, "finish_reason": plan.finish_reason}],
        "usage": plan.usage(),
    }


def completions_stream(plan: Plan, model: str, *, include_usage: bool, shape: Shape) -> Frames:
    head = _chunk_head("cmpl-", "text_completion", model)
    prefix = b"data: " + head + b',"choices":[{"text":'
    usage_null = b',"usage":null' if include_usage else b""
    suffix = b',"index":0,"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
    dumps = orjson.dumps
    content = [prefix + dumps(t) + suffix for t in plan.tokens]
    finish = (
        prefix
        + b'"","index":0,"logprobs":null,"finish_reason":'
        + dumps(plan.finish_reason)
        + b"}]"
        + usage_null
        + b"}\n\n"
    )
    return _choices_stream(head, content, finish, plan, include_usage, shape)


# Responses ---------------------------------------------------------------------------------


def _response(
    rid: str,
    created: int,
    model: str,
    body: dict[str, Any],
    status: str,
    output: list[Any],
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "metadata": body.get("metadata") or {},
    }


def _output_items(plan: Plan, item_id: str) -> list[dict[str, Any]]:
    call = plan.tool_call
    if call is not None:
        return [
            {
                "id": item_id,
                "type": "function_call",
                "status": "completed",
                "arguments": call.arguments,
                "call_id": call.call_id,
                "name": call.name,
            }
        ]
    return [
        {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": plan.text}],
        }
    ]


def _response_status(plan: Plan) -> tuple[str, dict[str, str] | None]:
    if plan.finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    return "completed", None


def responses_body(plan: Plan, model: str, body: dict[str, Any]) -> dict[str, Any]:
    prefix = "fc_" if plan.tool_call else "msg_"
    status, incomplete = _response_status(plan)
    out = _response(
        new_id("resp_"),
        int(time.time()),
        model,
        body,
        status,
        _output_items(plan, new_id(prefix)),
        plan.responses_usage(),
    )
    out["incomplete_details"] = incomplete
    return out


class _Sequence:
    """Numbers the events in the order they will be sent."""

    def __init__(self) -> None:
        self.n = 0

    def event(self, name: str, fields: dict[str, Any]) -> bytes:
        obj = {"type": name, "sequence_number": self.n, **fields}
        self.n += 1
        return _event(name, obj)


def responses_stream(plan: Plan, model: str, body: dict[str, Any], *, shape: Shape) -> Frames:
    """created, in_progress; output_item.added (+ content_part.added) with the first delta;
    one delta per token or fragment; the `.done` events; response.completed with usage."""
    rid, created = new_id("resp_"), int(time.time())
    call = plan.tool_call
    item_id = new_id("fc_" if call else "msg_")
    seq = _Sequence()
    started = _response(rid, created, model, body, "in_progress", [], None)
    start = seq.event("response.created", {"response": started}) + seq.event(
        "response.in_progress", {"response": started}
    )
    where = {"item_id": item_id, "output_index": 0}
    if call is not None:
        opening = seq.event(
            "response.output_item.added",
            {
                "output_index": 0,
                "item": {
                    "id": item_id,
                    "type": "function_call",
                    "status": "in_progress",
                    "arguments": "",
                    "call_id": call.call_id,
                    "name": call.name,
                },
            },
        )
        pieces, text_where = call.fragments, where
        delta_name = "response.function_call_arguments.delta"
    else:
        opening = seq.event(
            "response.output_item.added",
            {
                "output_index": 0,
                "item": {
                    "id": item_id,
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            },
        ) + seq.event(
            "response.content_part.added",
            {
                **where,
                "content_index": 0,
                "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
            },
        )
        pieces, delta_name = plan.tokens, "response.output_text.delta"
        text_where = {**where, "content_index": 0}
    content: list[bytes] = []
    for i, piece in enumerate(pieces):
        if shape.error_at is not None and i >= max(1, shape.error_at):
            break
        extra: dict[str, Any] = {"logprobs": []} if call is None else {}
        content.append(seq.event(delta_name, {**text_where, "delta": piece, **extra}))
    if content:
        content[0] = opening + content[0]
    if shape.malformed_at is not None and content:
        i = min(shape.malformed_at, len(content) - 1)
        content[i] = MALFORMED + content[i]
    if shape.error_at is not None and shape.rate_limited:
        return Frames(start, content, _frame({"error": RATE_LIMITED}))
    if shape.error_at is not None:
        tail = seq.event(
            "error", {"code": MIDSTREAM_ERROR["code"], "message": MIDSTREAM_ERROR["message"], "param": None}
        )
        return Frames(start, content, tail)
    items = _output_items(plan, item_id)
    tail = b""
    if shape.finish:
        if call is not None:
            tail += seq.event(
                "response.function_call_arguments.done",
                {**where, "name": call.name, "arguments": call.arguments},
            )
        else:
            part = items[0]["content"][0]
            tail += seq.event("response.output_text.done", {**text_where, "text": plan.text, "logprobs": []})
            tail += seq.event("response.content_part.done", {**text_where, "part": part})
        tail += seq.event("response.output_item.done", {"output_index": 0, "item": items[0]})
    status, incomplete = _response_status(plan)
    usage = plan.responses_usage(shape.usage_extra) if shape.usage else None
    final = _response(rid, created, model, body, status, items, usage)
    final["incomplete_details"] = incomplete
    name = "response.completed" if status == "completed" else "response.incomplete"
    tail += seq.event(name, {"response": final})
    return Frames(start, content, tail)


def error_body(message: str, type_: str, code: str) -> bytes:
    return orjson.dumps({"error": _error(message, type_, code)})
