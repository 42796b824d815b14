"""What the SDKs' stream helpers raise on or lose, one stream each, and the audit's word on it.

Chat: the openai Python SDK's `chat.completions.stream()`, the npm SDK's `ChatCompletionStream`
and the AI SDK's OpenAI provider; Anthropic: Python's `messages.stream()` and TypeScript's
`MessageStream`. Each case names what the clients did with it (outside reviews, run against
the real clients; the interop tests run them on recorded streams and their mutants).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import dialect_for_route


def _verdict(route: str, body: str) -> list[str]:
    a = StreamAudit(dialect_for_route(route)(), 0.0, include_usage=True)
    a.feed(body.encode(), 0.01)
    r = a.finish(0.5, End.UPSTREAM_EOF)
    assert r.outcome.value == "complete"
    return list(r.anomalies)


def _chat(frames: list[Any]) -> str:
    return "".join(f"data: {f if isinstance(f, str) else json.dumps(f)}\n\n" for f in frames)


def C(choices: Any, **more: Any) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": choices,
        **more,
    }


ROLE = C([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
HI = C([{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}])
STOP = C([{"index": 0, "delta": {}, "finish_reason": "stop"}])
USAGE = C([], usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
ZEROS = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
F0 = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
AZURE_FILTER = {
    "choices": [
        {
            "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 5},
            "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
            "finish_reason": None,
            "index": 0,
        }
    ],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
}
A1 = {"index": 0, "function": {"arguments": '{"city":'}}
A2 = {"index": 0, "function": {"arguments": '"Paris"}'}}


def text(*middle: Any) -> list[Any]:
    return [ROLE, *middle, STOP, USAGE, "[DONE]"]


def choice(**fields: Any) -> dict[str, Any]:
    return C([{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None, **fields}])


def calls(*deltas: dict[str, Any]) -> list[Any]:
    pieces = [C([{"index": 0, "delta": {"tool_calls": [d]}, "finish_reason": None}]) for d in deltas]
    finish = C([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}])
    return [ROLE, *pieces, finish, USAGE, "[DONE]"]


def w(d: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**d, **fields}


def wf(d: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**d, "function": {**d["function"], **fields}}


def drop(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


MALFORMED = ["malformed_frame"]
# (name, frames, anomalies, what the clients did)
CHAT = [
    ("text", text(HI), [], "all read it"),
    ("tool call", calls(F0, A1, A2), [], "all read it"),
    ("choices null", text(HI, C(None)), MALFORMED, "all three raise (not iterable)"),
    (
        "choices null beside usage",
        [ROLE, HI, STOP, C(None, usage=USAGE["usage"]), "[DONE]"],
        MALFORMED,
        "all three raise",
    ),
    (
        "choice without index",
        text(choice(index=None)),
        ["missing_finish_reason", *MALFORMED],
        "Python raises, the AI SDK rejects it, npm loses the text",
    ),
    (
        "choice index 0.0",
        text(choice(index=0.0)),
        ["missing_finish_reason", *MALFORMED],
        "Python raises (TypeError)",
    ),
    (
        "choice index '0'",
        text(choice(index="0")),
        ["missing_finish_reason", *MALFORMED],
        "Python and the AI SDK raise, npm loses it",
    ),
    (
        "choice index -1 only",
        [
            C([{"index": -1, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]),
            C([{"index": -1, "delta": {}, "finish_reason": "stop"}]),
            USAGE,
            "[DONE]",
        ],
        MALFORMED,
        "npm finds no message",
    ),
    (
        "choice index 1 only",
        [
            C([{"index": 1, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]),
            C([{"index": 1, "delta": {}, "finish_reason": "stop"}]),
            USAGE,
            "[DONE]",
        ],
        MALFORMED,
        "Python and npm raise",
    ),
    (
        "choices 1 then 0 in the first chunk",
        [
            C(
                [
                    {"index": 1, "delta": {"role": "assistant", "content": "b"}, "finish_reason": None},
                    {"index": 0, "delta": {"role": "assistant", "content": "a"}, "finish_reason": None},
                ]
            ),
            C(
                [
                    {"index": 0, "delta": {}, "finish_reason": "stop"},
                    {"index": 1, "delta": {}, "finish_reason": "stop"},
                ]
            ),
            USAGE,
            "[DONE]",
        ],
        [],
        "all read it",
    ),
    (
        "choice without delta",
        [ROLE, HI, C([{"index": 0, "finish_reason": "stop"}]), USAGE, "[DONE]"],
        MALFORMED,
        "Python raises (no delta to read)",
    ),
    (
        "delta null",
        [ROLE, HI, C([{"index": 0, "delta": None, "finish_reason": "stop"}]), USAGE, "[DONE]"],
        MALFORMED,
        "Python raises",
    ),
    (
        "content a number",
        text(choice(delta={"content": 5})),
        MALFORMED,
        "the AI SDK rejects it, Python loses it",
    ),
    ("content an object", text(choice(delta={"content": {"t": 1}})), MALFORMED, "the AI SDK rejects it"),
    (
        "content a list of typed parts (Mistral's thinking, then text)",
        text(
            choice(delta={"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "hm"}]}]}),
            choice(delta={"content": [{"type": "text", "text": "Hi"}]}),
        ),
        [],
        "Mistral's SDKs read it; Python's create passes it on, its helper drops it",
    ),
    (
        "content a list of untyped values",
        text(choice(delta={"content": ["Hi", 5]})),
        MALFORMED,
        "no client reads it",
    ),
    *(
        (f"content the list {parts}", text(choice(delta={"content": parts})), MALFORMED, "no client reads it")
        for parts in (
            [],
            [{"type": "x"}],
            [{"type": ""}],
            [{"type": "text", "text": 5}],
            [{"type": "thinking", "thinking": [{"type": "image", "url": "x"}]}],
        )
    ),
    (
        "finish_reason a number",
        [ROLE, HI, choice(delta={}, finish_reason=3), STOP, USAGE, "[DONE]"],
        MALFORMED,
        "the AI SDK rejects it",
    ),
    (
        "first delta without role",
        [HI, STOP, USAGE, "[DONE]"],
        [],
        "only npm's finalChatCompletion raises: not judged",
    ),
    ("call without id", calls(drop(F0, "id"), A1, A2), [], "all read it"),
    (
        "call without name",
        calls(drop(F0, "function") | {"function": {"arguments": ""}}, A1, A2),
        MALFORMED,
        "the AI SDK rejects it",
    ),
    ("call named ''", calls(wf(F0, name=""), A1, A2), MALFORMED, "the AI SDK rejects it"),
    ("call named 3", calls(wf(F0, name=3), A1, A2), MALFORMED, "the AI SDK rejects it"),
    (
        "call without type",
        calls(drop(F0, "type"), A1, A2),
        [],
        "only npm's finalChatCompletion raises: not judged",
    ),
    ("call of type ''", calls(w(F0, type=""), A1, A2), MALFORMED, "npm and the AI SDK raise"),
    ("custom tool call", calls(w(F0, type="custom"), A1, A2), [], "none reads one: not judged"),
    (
        "custom tool call's later pieces",
        calls(
            {"index": 0, "id": "c", "type": "custom", "custom": {"name": "f", "input": ""}},
            {"index": 0, "custom": {"input": "x"}},
        ),
        [],
        "none reads one: not judged",
    ),
    (
        "a later piece naming the call otherwise",
        calls(F0, wf(A1, name="lookup"), A2),
        [*MALFORMED, "repeated_tool_call_fields"],
        "Python joins the names, the AI SDK splits the call",
    ),
    (
        "a later piece named 3",
        calls(F0, wf(A1, name=3), A2),
        [*MALFORMED, "repeated_tool_call_fields"],
        "the AI SDK rejects it",
    ),
    ("call id 7", calls(w(F0, id=7), A1, A2), MALFORMED, "the AI SDK rejects it"),
    (
        "later piece function null",
        calls(F0, A1, {"index": 0, "function": None}, A2),
        MALFORMED,
        "Python asserts, the AI SDK rejects it",
    ),
    (
        "later piece without function",
        calls(F0, A1, {"index": 0}, A2),
        MALFORMED,
        "Python asserts, the AI SDK rejects it",
    ),
    (
        "first call at index 1",
        calls(w(F0, index=1), w(A1, index=1), w(A2, index=1)),
        MALFORMED,
        "Python and npm raise",
    ),
    (
        "call at index -1",
        calls(w(F0, index=-1), w(A1, index=-1), w(A2, index=-1)),
        MALFORMED,
        "npm loses the arguments",
    ),
    ("call at index 0.0", calls(w(F0, index=0.0), w(A1, index=0.0), w(A2, index=0.0)), [], "all read it"),
    (
        "arguments for no call",
        text(
            C(
                [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
                        "finish_reason": None,
                    }
                ]
            )
        ),
        MALFORMED,
        "npm and the AI SDK raise",
    ),
    (
        "another id for a call",
        calls(F0, w(A1, id="call_2"), A2),
        ["repeated_tool_call_fields"],
        "Python joins the ids, the others read one call",
    ),
    (
        "another id for a call, with its name",
        calls(F0, wf(w(A1, id="call_2"), name="get_weather"), A2),
        [*MALFORMED, "repeated_tool_call_fields"],
        "the AI SDK splits the call and parses neither half",
    ),
    (
        "Azure's content filter annotations",
        [ROLE, HI, AZURE_FILTER, STOP, AZURE_FILTER, USAGE, "[DONE]"],
        [],
        "all read it (Python skips a chunk whose object is not a chunk)",
    ),
    (
        "a gap in the first chunk's choices",
        [
            C(
                [
                    {"index": 0, "delta": {"role": "assistant", "content": "A"}},
                    {"index": 2, "delta": {"role": "assistant", "content": "C"}},
                ]
            ),
            C(
                [
                    {"index": 0, "delta": {}, "finish_reason": "stop"},
                    {"index": 2, "delta": {}, "finish_reason": "stop"},
                ]
            ),
            USAGE,
            "[DONE]",
        ],
        MALFORMED,
        "Python and npm raise",
    ),
    (
        "the id and name again (LiteLLM)",
        calls(F0, wf(F0, name="get_weather", arguments='{"city":'), wf(F0, arguments='"Paris"}')),
        ["repeated_tool_call_fields"],
        "Python joins them; the others read it",
    ),
    (
        "a usage chunk without choices",
        [ROLE, HI, STOP, {k: v for k, v in USAGE.items() if k != "choices"}, "[DONE]"],
        MALFORMED,
        "Python's and npm's helpers raise, the AI SDK rejects the chunk",
    ),
    (
        "an error frame with usage and without choices",
        [ROLE, HI, {"error": {"message": "overloaded"}, "usage": USAGE["usage"]}],
        None,
        "all raise at the error (in-band failure, not malformed)",
    ),
    (
        "usage on the finish chunk and in the usage chunk",
        [ROLE, HI, C(STOP["choices"], usage=USAGE["usage"]), USAGE, "[DONE]"],
        ["repeated_usage"],
        "all read it; LangChain and pydantic-ai add the two up",
    ),
    (
        "two finish chunks, the second with the usage (OpenRouter)",
        [ROLE, HI, STOP, C(STOP["choices"], usage=USAGE["usage"]), "[DONE]"],
        ["repeated_finish_reason"],
        "all read it; LangChain joins the reasons into `stopstop`",
    ),
    (
        "usage of zeros on every chunk, then the usage chunk",
        [C(c["choices"], usage=ZEROS) for c in (ROLE, HI, STOP)] + [USAGE, "[DONE]"],
        [],
        "all read it; LangChain's sum is right (zeros add nothing)",
    ),
    (
        "prompt tokens on the first chunk, then the usage chunk",
        [C(ROLE["choices"], usage={"prompt_tokens": 1}), HI, STOP, USAGE, "[DONE]"],
        ["repeated_usage"],
        "LangChain counts the prompt twice",
    ),
    (
        "a second finish in a chunk without a delta",
        [ROLE, HI, STOP, C([{"index": 0, "delta": None, "finish_reason": "stop"}]), USAGE, "[DONE]"],
        MALFORMED,
        "Python's helper raises; LangChain skips the chunk (no `stopstop`)",
    ),
    (
        "a finish reason on each of two choices, once each",
        [
            C(
                [
                    {"index": 0, "delta": {"role": "assistant", "content": "A"}},
                    {"index": 1, "delta": {"content": "B"}},
                ]
            ),
            C([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
            C([{"index": 1, "delta": {}, "finish_reason": "stop"}]),
            USAGE,
            "[DONE]",
        ],
        [],
        "all read it",
    ),
    (
        "usage on the finish chunk only",
        [ROLE, HI, C(STOP["choices"], usage=USAGE["usage"]), "[DONE]"],
        [],
        "all read it",
    ),
    (
        "usage null on every chunk but the last",
        [
            C(ROLE["choices"], usage=None),
            C(HI["choices"], usage=None),
            C(STOP["choices"], usage=None),
            USAGE,
            "[DONE]",
        ],
        [],
        "all read it (OpenAI's own shape)",
    ),
]


@pytest.mark.parametrize(("frames", "anomalies"), [(c[1], c[2]) for c in CHAT], ids=[c[0] for c in CHAT])
def test_chat(frames: list[Any], anomalies: list[str] | None) -> None:
    if anomalies is None:  # the stream failed in-band
        a = StreamAudit(dialect_for_route("chat_completions")(), 0.0)
        a.feed(_chat(frames).encode(), 0.01)
        r = a.finish(0.5, End.UPSTREAM_EOF)
        assert (r.outcome.value, r.anomalies) == ("upstream_error", ["error_event"])
        return
    assert _verdict("chat_completions", _chat(frames)) == anomalies


def _anthropic(events: list[dict[str, Any]]) -> str:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)


S = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "m",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    },
}


def B(i: Any, kind: str = "text") -> dict[str, Any]:
    block = (
        {"type": "text", "text": ""}
        if kind == "text"
        else {"type": "thinking", "thinking": "", "signature": ""}
    )
    return {"type": "content_block_start", "index": i, "content_block": block}


def T(i: Any, s: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": s}}


def X(i: Any) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": i}


D = {
    "type": "message_delta",
    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
    "usage": {"output_tokens": 3},
}
E = {"type": "message_stop"}
ANTHROPIC = [
    ("text", [S, B(0), T(0, "Hi"), X(0), D, E], [], "both read it"),
    (
        "a stop of a block never started",
        [S, B(0), T(0, "Hi"), X(0), X(1), D, E],
        MALFORMED,
        "Python raises (IndexError)",
    ),
    ("a stop at -1", [S, B(0), T(0, "Hi"), X(-1), D, E], [], "both read it"),
    ("a second message_start", [S, B(0), T(0, "Hi"), X(0), S, D, E], MALFORMED, "TypeScript raises"),
    (
        "a block started again at its index",
        [S, B(0), B(0), T(0, "Hi"), X(0), B(1), T(1, "Lost"), X(1), D, E],
        MALFORMED,
        "both put the text in the wrong block",
    ),
    (
        "a block at index 1 first",
        [S, B(1), T(1, "Hi"), X(1), D, E],
        MALFORMED,
        "Python raises, TypeScript loses it",
    ),
    (
        "content after message_stop",
        [S, B(0), T(0, "Hi"), X(0), E, B(1), T(1, "After"), X(1), D],
        MALFORMED,
        "TypeScript's final message lost it",
    ),
    ("index '0'", [S, B("0"), T("0", "Hi"), X("0"), D, E], [], "both read it"),
    ("index 0.0", [S, B(0.0), T(0.0, "Hi"), X(0.0), D, E], [], "both read it"),
    ("index 0.5", [S, B(0), T(0.5, "Hi"), X(0), D, E], MALFORMED, "Python raises, TypeScript loses the text"),
    (
        "message_delta with an empty usage",
        [S, B(0), T(0, "Hi"), X(0), {**D, "usage": {}}, E],
        [],
        "both read it (the count is lost)",
    ),
    (
        "message_delta without usage",
        [S, B(0), T(0, "Hi"), X(0), {k: v for k, v in D.items() if k != "usage"}, E],
        MALFORMED,
        "both raise",
    ),
    (
        "a text delta before message_start",
        [T(0, "Lost"), S, B(0), T(0, "Hi"), X(0), D, E],
        MALFORMED,
        "both lose it (anthropic before 2.x raised)",
    ),
    (
        "an error after message_stop",
        [S, B(0), T(0, "Hi"), X(0), D, E, {"type": "error", "error": {"type": "overloaded_error"}}],
        None,
        "an error",
    ),
]


@pytest.mark.parametrize(
    ("events", "anomalies"), [(c[1], c[2]) for c in ANTHROPIC], ids=[c[0] for c in ANTHROPIC]
)
def test_anthropic(events: list[dict[str, Any]], anomalies: list[str] | None) -> None:
    body = _anthropic(events)
    if anomalies is None:  # the stream failed in-band: no verdict on its order
        a = StreamAudit(dialect_for_route("messages")(), 0.0)
        a.feed(body.encode(), 0.01)
        assert "malformed_frame" not in a.finish(0.5, End.UPSTREAM_EOF).anomalies
        return
    assert _verdict("messages", body) == anomalies
