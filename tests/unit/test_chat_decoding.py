"""The Chat dialect reads a frame two ways: decoded into the few fields it needs (most frames),
or as plain JSON values when the frame has another shape. Both must say the same of any frame."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core.dialects import CONTENT, ERROR, FINISH, MALFORMED, USAGE
from sse_audit_proxy.core.dialects.chat import ChatCompletions, _decode_chunk
from sse_audit_proxy.core.dialects.completions import Completions

# The names the dialect reads, and a few it does not: the generator puts them anywhere.
KEYS = st.sampled_from(
    [
        "error",
        "usage",
        "choices",
        "index",
        "delta",
        "finish_reason",
        "content",
        "tool_calls",
        "refusal",
        "reasoning",
        "reasoning_content",
        "function_call",
        "id",
        "function",
        "arguments",
        "name",
        "object",
        "x",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "stop", "length", "error", "hi", '{"a":', "{}"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=20,
)
# Frames close to real chunks, so the typed reading is taken often.
DELTA = st.dictionaries(KEYS, JSON, max_size=3)
CHOICE = st.fixed_dictionaries(
    {},
    optional={"index": JSON, "delta": st.one_of(DELTA, JSON), "finish_reason": JSON, "x": JSON},
)
CHUNK = st.fixed_dictionaries(
    {},
    optional={
        "choices": st.one_of(st.lists(CHOICE, max_size=3), JSON),
        "error": JSON,
        "usage": JSON,
        "id": JSON,
        "object": st.one_of(st.sampled_from(["error", "chat.completion.chunk"]), JSON),
        "x_groq": st.one_of(JSON, st.fixed_dictionaries({}, optional={"usage": JSON, "error": JSON})),
    },
)

# Chunks of exactly the shape the typed reading takes (an integer `index`, an object `delta`,
# a string `finish_reason`), so its own loop over the choices is what is compared.
TOOL_CALL = st.fixed_dictionaries(
    {},
    optional={
        "index": st.integers(min_value=0, max_value=1),
        "id": st.sampled_from(["", "call_1", "call_2"]),
        "function": st.fixed_dictionaries(
            {},
            optional={"name": st.sampled_from(["", "f"]), "arguments": st.sampled_from(["", '{"a":', "1}"])},
        ),
    },
)
TYPED_DELTA = st.fixed_dictionaries(
    {},
    optional={
        "role": st.just("assistant"),
        "content": st.sampled_from([None, "", "hi"]),
        "tool_calls": st.lists(TOOL_CALL, max_size=2),
        "reasoning_content": st.sampled_from([None, "", "r"]),
    },
)
TYPED_CHOICE = st.fixed_dictionaries(
    {},
    optional={
        "index": st.integers(min_value=0, max_value=2),
        "delta": st.one_of(st.none(), TYPED_DELTA, DELTA),
        "finish_reason": st.one_of(st.none(), st.sampled_from(["", "stop", "length", "tool_calls", "error"])),
        "x": JSON,
    },
)
TYPED_CHUNK = st.fixed_dictionaries(
    {"choices": st.lists(TYPED_CHOICE, max_size=3)},
    optional={
        "error": JSON,
        "usage": JSON,
        "id": JSON,
        "object": st.sampled_from(["error", "x"]),
        "x_groq": st.fixed_dictionaries({}, optional={"usage": JSON, "error": JSON, "id": JSON}),
    },
)


def _state(d: ChatCompletions) -> Any:
    s = d.summary()
    return (
        s,
        d._choices,
        d._finish,
        d._usage,
        d._usage_reports,
        d._finish_repeats,
        d._errors,
        d._failed,
        d._malformed,
    )


def _both(frames: list[bytes]) -> tuple[Any, Any]:
    typed, plain = ChatCompletions(), ChatCompletions()
    bits_typed = [typed.observe_data(f) for f in frames]
    bits_plain = [plain._observe_doc(f) for f in frames]
    return (bits_typed, _state(typed)), (bits_plain, _state(plain))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(CHUNK, JSON), min_size=1, max_size=5))
def test_the_typed_reading_says_what_the_plain_reading_says(docs: list[Any]) -> None:
    frames = [orjson.dumps(d) for d in docs]
    typed, plain = _both(frames)
    assert typed == plain


@settings(max_examples=400, deadline=None)
@given(st.lists(TYPED_CHUNK, min_size=1, max_size=5))
def test_the_typed_loop_over_choices_says_what_the_plain_reading_says(docs: list[Any]) -> None:
    frames = [orjson.dumps(d) for d in docs]
    for frame in frames:
        _decode_chunk(frame)  # each frame is of the typed shape (raises if not)
    typed, plain = _both(frames)
    assert typed == plain


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40).filter(lambda b: b != b"[DONE]"))  # the one frame not read as JSON
def test_any_bytes_are_read_alike(data: bytes) -> None:
    typed, plain = _both([data, b'{"choices":[{"delta":{"content":"x"}}]}' + data])
    assert typed == plain


def test_the_common_frames_take_the_typed_reading_and_say_what_they_carry() -> None:
    d = ChatCompletions()
    content = b'{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}'
    assert d.observe_data(content) == CONTENT
    assert d.observe_data(b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}') == FINISH
    assert d.observe_data(b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}') == USAGE
    assert d.observe_data(b'{"error":{"message":"overloaded"}}') == ERROR
    assert d.observe_data(b'{"choices":[{"index":0,"delta":{}}], "error": null}') == 0
    assert d.observe_data(b'{"choices":{"index":0}}') == MALFORMED  # another shape: read plainly
    assert d.observe_data(b'{"choices":[1]}') == MALFORMED
    assert d.observe_data(b"not json") == MALFORMED
    assert d.observe_data(b"[" * 5000 + b"]" * 5000) == MALFORMED  # too deep: not read, counted
    s = d.summary()
    assert s.finish_reasons == ["stop"]
    assert s.prompt_tokens == 3 and s.completion_tokens == 2
    assert s.malformed_frames == 4 and s.error_events == 1


def test_tool_call_arguments_assemble_on_the_typed_reading() -> None:
    d = ChatCompletions()
    call = b'{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,%b}]}}]}'
    frames = [
        call % b'"id":"call_1","function":{"name":"get_weather","arguments":""}',
        call % b'"function":{"arguments":"{\\"ci"}',
        call % b'"function":{"arguments":"ty\\": 1}"}',
        b'{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}',
    ]
    assert [d.observe_data(f) for f in frames] == [CONTENT, CONTENT, CONTENT, FINISH]
    s = d.summary()
    assert s.tool_calls == 1 and s.invalid_tool_arguments == 0


def test_completions_content_is_text_not_delta() -> None:
    d = Completions()
    assert d.observe_data(b'{"choices":[{"index":0,"text":"hi","finish_reason":null}]}') == CONTENT
    assert d.observe_data(b'{"choices":[{"index":0,"text":"","delta":{"content":"hi"}}]}') == 0
    # A choice with no `text` at all is read as Chat's (Mistral's FIM completions).
    assert d.observe_data(b'{"choices":[{"index":0,"delta":{"content":"hi"}}]}') == CONTENT
    assert d.observe_data(b'{"choices":[{"index":0,"text":"","finish_reason":"stop"}]}') == FINISH
    assert d.summary().finish_reasons == ["stop"]


def test_groqs_usage_gives_the_token_counts_but_is_no_asked_for_usage() -> None:
    """Groq puts usage in `x_groq.usage` of its last chunk (its SDKs read it there; its Python
    SDK refuses `stream_options`): the record had no token counts for that traffic (outside
    review). It is counted now; `missing_usage` stays for a client that asked for `usage`."""
    from sse_audit_proxy.core.audit import End, StreamAudit

    def chunk(delta: dict[str, Any], reason: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        doc = {"object": "chat.completion.chunk", "choices": [choice], **extra}
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    frames = [
        chunk({"role": "assistant", "content": ""}, x_groq={"id": "req_01"}),
        chunk({"content": "Hi"}),
        chunk({}, "stop", x_groq={"id": "req_01", "usage": {"prompt_tokens": 12, "completion_tokens": 2}}),
        b"data: [DONE]\n\n",
    ]
    for asked, anomalies in ((False, []), (True, ["missing_usage"])):
        audit = StreamAudit(ChatCompletions(), 0.0, include_usage=asked)
        for i, f in enumerate(frames):
            audit.feed(f, 0.1 + 0.01 * i)
        r = audit.finish(0.2, End.UPSTREAM_EOF)
        assert (r.anomalies, r.usage, r.prompt_tokens, r.completion_tokens) == (anomalies, None, 12, 2)


def test_groqs_error_is_an_in_band_failure() -> None:
    """`x_groq.error` says why Groq stopped a stream early, and its SDK does not raise on it:
    with `finish_reason: stop` the stream was `complete` with no word (third pass)."""
    from sse_audit_proxy.core.audit import End, Outcome, StreamAudit

    frames = [
        b'data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
        b'"x_groq":{"id":"req_1","error":"tool call validation failed"}}\n\n',
        b"data: [DONE]\n\n",
    ]
    audit = StreamAudit(ChatCompletions(), 0.0)
    for i, f in enumerate(frames):
        audit.feed(f, 0.1 + 0.01 * i)
    r = audit.finish(0.2, End.UPSTREAM_EOF)
    assert (r.outcome, r.anomalies) == (Outcome.UPSTREAM_ERROR, ["error_event"])
