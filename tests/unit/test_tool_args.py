"""Streamed tool-call arguments: held compactly, and judged as the joined text would be.

Arguments arrive a few characters a frame (OpenAI's fragments are a token or two; a coding
agent's file write can run to hundreds of kilobytes). The audit holds them to check, at the
end, that each call assembled into a JSON object."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from collections.abc import Callable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import Dialect
from sse_audit_proxy.core.dialects.anthropic import AnthropicMessages
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.dialects.responses import Responses
from sse_audit_proxy.core.dialects.tool_args import DONE_CHECKS, ToolArgs

FRAGMENTS = 20_000  # one character each


def _chat(piece: str, first: bool) -> bytes:
    call: dict[str, object] = {"index": 0, "function": {"arguments": piece}}
    if first:
        call.update(id="call_1", type="function", function={"name": "write_file", "arguments": piece})
    return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}) + b"\n\n"


def _responses(piece: str, first: bool) -> bytes:
    kind = "response.function_call_arguments.delta"
    delta = {"type": kind, "output_index": 0, "item_id": "fc_1", "delta": piece}
    frame = b"data: " + orjson.dumps(delta) + b"\n\n"
    if first:
        item = {"type": "function_call", "id": "fc_1", "name": "write_file", "arguments": ""}
        added = {"type": "response.output_item.added", "output_index": 0, "item": item}
        frame = b"data: " + orjson.dumps(added) + b"\n\n" + frame
    return frame


def _anthropic(piece: str, first: bool) -> bytes:
    json_delta = {"type": "input_json_delta", "partial_json": piece}
    delta = {"type": "content_block_delta", "index": 0, "delta": json_delta}
    frame = b"event: content_block_delta\ndata: " + orjson.dumps(delta) + b"\n\n"
    if first:
        block = {"type": "tool_use", "id": "toolu_1", "name": "write_file", "input": {}}
        start = {"type": "content_block_start", "index": 0, "content_block": block}
        frame = b"event: content_block_start\ndata: " + orjson.dumps(start) + b"\n\n" + frame
    return frame


STREAMS: list[tuple[type[Dialect], Callable[[str, bool], bytes]]] = [
    (ChatCompletions, _chat),
    (Responses, _responses),
    (AnthropicMessages, _anthropic),
]


@pytest.mark.parametrize(("dialect", "frame"), STREAMS, ids=lambda v: getattr(v, "__name__", ""))
def test_one_character_fragments_are_held_at_about_a_byte_each(
    dialect: type[Dialect], frame: Callable[[str, bool], bytes]
) -> None:
    text = '{"content":"' + "é" * (FRAGMENTS - 14) + '"}'  # two UTF-8 bytes a character
    audit = StreamAudit(dialect(), 0.0)
    t = 0.001
    audit.feed(frame(text[0], True), t)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for piece in text[1:]:
            t += 0.001
            audit.feed(frame(piece, False), t)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A str object per fragment held about 60 bytes a character (about 1.2 MB here); the
    # arguments' UTF-8 is about 40 KB, and the timeline's bounded groups add a few.
    assert grown < 3 * len(text.encode()), f"{grown} bytes held for {len(text.encode())} bytes of arguments"
    result = audit.finish(t + 0.01, End.UPSTREAM_EOF)
    assert result.tool_calls == 1
    assert "invalid_tool_arguments" not in result.anomalies


def _joined_reading(fragments: list[str], done: str | None) -> int:
    """What the arguments' text says, read as one str (how the audit read them before): 1 if
    the call did not assemble into a JSON object, or its `.done` text is not the same JSON
    value."""
    text = "".join(fragments)
    if done is not None:
        if not text:
            text = done
        elif text != done:
            try:
                if orjson.loads(text) != orjson.loads(done):
                    return 1
            except orjson.JSONDecodeError:
                return 1
    try:
        return 0 if isinstance(orjson.loads(text), dict) else 1
    except orjson.JSONDecodeError:
        return 1


# Texts near a JSON object: valid ones (text outside ASCII, escapes, nesting), and each with
# one atom put in anywhere (a lone surrogate, which a str can hold and orjson refuses, a quote,
# a brace); cut into pieces anywhere, with a `.done` text equal to the joined pieces or not.
_VALID = [
    '{"a":"x"}',
    '{"s":"\\u00e9 \\ud83d\\ude00"}',
    '{"k":[1,2.5,{"n":null}],"t":true}',
    '{"c":"é😀"}',
    "{}",
]
_NOT_OBJECTS = ["[1]", '"s"', "1", ""]
_ATOMS = ["\ud83d", "\ude00", "\udfff", '"', "}", "{", ",", " ", "é", "\\", "\x00"]


@st.composite
def _text(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(_VALID + _NOT_OBJECTS))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(_ATOMS)) + text[at:]
    return text


@st.composite
def _pieces(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=6)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_calls_are_judged_as_their_joined_text(data: st.DataObject) -> None:
    fragments = data.draw(_pieces(data.draw(_text())))
    done = data.draw(st.none() | st.just("".join(fragments)) | _text())
    tools = ToolArgs()
    tools.open("k")
    for piece in fragments:
        tools.append("k", piece)
    if done is not None:
        tools.complete("k", done)
    assert tools.invalid() == _joined_reading(fragments, done)


def test_valid_arguments_whose_text_is_split_inside_a_character_escape_assemble() -> None:
    tools = ToolArgs()
    for piece in ['{"s":"\\u00', "e9 \\ud83d", '\\ude00"}']:
        tools.append("k", piece)
    tools.complete("k", '{"s":"\\u00e9 \\ud83d\\ude00"}')
    assert tools.invalid() == 0


def test_a_set_replaces_what_was_held_and_frees_its_share_of_the_cap() -> None:
    tools = ToolArgs()
    big = "x" * (3 << 20)
    tools.append("k", big)
    tools.set("k", '{"a":1}')  # the .done text replaces the fragments
    tools.append("j", '{"b":"' + big + '"}')  # 3 MiB more: under the 4 MiB cap once the first is freed
    tools.append("bad", "{")
    assert tools.invalid() == 1  # judged: past the cap nothing would be


def _block_start(i: int, tool_input: object) -> bytes:
    block = {"type": "tool_use", "id": f"toolu_{i}", "name": "f", "input": tool_input}
    start = {"type": "content_block_start", "index": i, "content_block": block}
    return b"event: content_block_start\ndata: " + json.dumps(start).encode() + b"\n\n"  # any depth


def test_tool_inputs_given_at_block_start_are_not_held() -> None:
    """256 tool_use blocks whose start carries a 100 KiB input: its text was held (25 MiB; with
    inputs near --max-frame-bytes, 256 MiB a stream). Whether it is an object is all that is
    judged, and all that is kept."""
    audit = StreamAudit(AnthropicMessages(), 0.0)
    big = {"content": "x" * (100 << 10)}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(256):
            audit.feed(_block_start(i, big), 0.01 * i)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, f"peak {peak >> 10} KiB"  # a frame being read
    assert audit.finish(3.0, End.UPSTREAM_EOF).tool_calls == 256


def test_a_tool_input_given_at_block_start_is_judged_when_no_fragment_follows() -> None:
    audit = StreamAudit(AnthropicMessages(), 0.0)
    audit.feed(_block_start(0, {"city": "Paris"}), 0.01)
    audit.feed(_block_start(1, [1, 2]), 0.02)  # not an object
    deep: object = 1
    for _ in range(400):  # deeper than orjson writes: its text was made, and raised
        deep = {"n": deep}
    audit.feed(_block_start(2, deep), 0.03)
    audit.feed(b'event: message_stop\ndata: {"type":"message_stop"}\n\n', 0.04)
    result = audit.finish(1.0, End.UPSTREAM_EOF)
    assert result.tool_calls == 3
    assert "invalid_tool_arguments" in result.anomalies
    assert any("1 of 3 tool calls" in reason for reason in result.reasons), result.reasons


def test_a_call_without_parameters_given_as_empty_text_says_so() -> None:
    """LiteLLM's bridge from Anthropic gives a tool without parameters `"arguments": ""` and no
    fragment after: not a JSON object (the openai SDK passes the empty text on, and `json.loads`
    raises on it; OpenAI sends `{}`). The reason says it was empty, apart from a broken call."""

    def call(index: int, arguments: str) -> bytes:
        fn = {"name": f"tool_{index}", "arguments": arguments}
        tool = {"index": index, "id": f"call_{index}", "type": "function", "function": fn}
        doc = {"choices": [{"index": 0, "delta": {"tool_calls": [tool]}, "finish_reason": None}]}
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    audit = StreamAudit(ChatCompletions(), 0.0)
    for i, frame in enumerate([call(0, ""), call(1, "{}"), call(2, '{"a":'), b'data: {"choices":[]}\n\n']):
        audit.feed(frame, 0.01 * (i + 1))
    audit.feed(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n', 0.05)
    audit.feed(b"data: [DONE]\n\n", 0.06)
    result = audit.finish(0.07, End.UPSTREAM_EOF)
    assert result.tool_calls == 3 and "invalid_tool_arguments" in result.anomalies, result
    [reason] = [r for r in result.reasons if "tool call" in r]
    assert reason.startswith("invalid_tool_arguments: 2 of 3 tool calls had arguments"), reason
    assert "(1 empty: a call without parameters" in reason, reason


@pytest.mark.parametrize("arguments", [{"city": "Paris"}, {}, ["Paris"], 3, True])
def test_arguments_that_are_not_text_are_invalid_not_empty(arguments: object) -> None:
    """A gateway that sends a call's `arguments` as a JSON value instead of its text (OpenAI
    sends text, and the openai SDK's callers concatenate and `json.loads` it) had the call
    counted as empty, with a reason about parameterless calls that were not there."""
    fn = {"name": "get_weather", "arguments": arguments}
    tool = {"index": 0, "id": "call_0", "type": "function", "function": fn}
    frames = [
        b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [tool]}}]}) + b"\n\n",
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    audit = StreamAudit(ChatCompletions(), 0.0)
    for i, frame in enumerate(frames):
        audit.feed(frame, 0.01 * (i + 1))
    result = audit.finish(0.05, End.UPSTREAM_EOF)
    assert result.tool_calls == 1 and "invalid_tool_arguments" in result.anomalies, result
    [reason] = [r for r in result.reasons if "tool call" in r]
    assert reason.startswith("invalid_tool_arguments: 1 of 1 tool call had arguments"), reason
    assert "empty" not in reason, reason


def test_responses_custom_tool_calls_are_counted_and_not_judged() -> None:
    """A GPT-5 custom tool's call (free text input, not JSON) was not counted in `tool_calls`."""

    def event(doc: dict[str, object]) -> bytes:
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    function = {"type": "function_call", "id": "fc_1", "name": "get_weather", "arguments": ""}
    custom = {"type": "custom_tool_call", "id": "ctc_1", "name": "code_exec", "input": ""}
    frames = [
        event({"type": "response.output_item.added", "output_index": 0, "item": function}),
        event(
            {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": '{"city":"Paris"}'}
        ),
        event({"type": "response.output_item.added", "output_index": 1, "item": custom}),
        event({"type": "response.custom_tool_call_input.delta", "output_index": 1, "delta": "print(1) +"}),
        event(
            {
                "type": "response.output_item.done",
                "output_index": 1,
                "item": {**custom, "input": "print(1) +"},
            }
        ),
        # An item `type` that is no string (it raised: a dict is not hashable).
        event({"type": "response.output_item.added", "output_index": 2, "item": {"type": {"a": 1}}}),
        event({"type": "response.completed", "response": {"status": "completed"}}),
    ]
    audit = StreamAudit(Responses(), 0.0)
    for i, frame in enumerate(frames):
        audit.feed(frame, 0.01 * (i + 1))
    result = audit.finish(0.1, End.UPSTREAM_EOF)
    assert result.tool_calls == 2, result  # before: 1
    assert "invalid_tool_arguments" not in result.anomalies, result


def test_held_arguments_are_parsed_for_two_dones_at_most_however_many_repeat_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A `.done` that repeats a call's arguments differently written has the held arguments
    parsed to compare values; an upstream repeating a tiny one had up to 4 MiB parsed for each
    (110 ms an 82-byte frame, every stream on the loop stalled: an outside review). A call is
    checked against two (Responses repeats them in `function_call_arguments.done` and in
    `output_item.done`); its verdict stands."""
    import sse_audit_proxy.core.dialects.tool_args as tool_args

    parsed: list[int] = []
    same_value = tool_args._same_value

    def counted(a: bytes | bytearray, b: bytes) -> bool:
        parsed.append(len(a))
        return same_value(a, b)

    monkeypatch.setattr(tool_args, "_same_value", counted)
    held = "[" + ",".join(["{}"] * 50_000) + "]"
    audit = StreamAudit(Responses(), 0.0)
    delta = {"type": "response.function_call_arguments.delta", "output_index": 0, "item_id": "fc_1"}
    done = {"type": "response.function_call_arguments.done", "output_index": 0, "item_id": "fc_1"}
    audit.feed(b"data: " + json.dumps({**delta, "delta": held}).encode() + b"\n\n", 0.1)
    frame = b"data: " + json.dumps({**done, "arguments": "{}"}).encode() + b"\n\n"
    audit.feed(frame * 200, 0.2)
    assert parsed and set(parsed) == {len(held)} and len(parsed) <= DONE_CHECKS, len(parsed)
    assert "invalid_tool_arguments" in audit.finish(1.0, End.UPSTREAM_EOF).anomalies


@pytest.mark.parametrize("where", ["before the call", "in a text answer"])
def test_a_tool_call_entry_with_nothing_of_a_call_opens_none(where: str) -> None:
    """An entry with no index, id or function (Gemini's OpenAI-compatible API sends a thought
    signature alone, in `extra_content`) opened an empty call: `invalid_tool_arguments` on a
    healthy answer (an outside review)."""
    signature = {"extra_content": {"google": {"thought_signature": "c2ln"}}}
    chunks: list[dict[str, object]] = [{"tool_calls": [signature]}]
    if where == "before the call":
        # Gemini's calls come whole, with an id and no index
        call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        chunks.append({"tool_calls": [call]})
    else:
        chunks.append({"content": "Paris."})
    audit = StreamAudit(ChatCompletions(), 0.0)
    for i, delta in enumerate(chunks):
        audit.feed(
            b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta}]}).encode() + b"\n\n", 0.1 * i
        )
    reason = "tool_calls" if where == "before the call" else "stop"
    audit.feed(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"%s"}]}\n\n' % reason.encode(), 0.5)
    audit.feed(b"data: [DONE]\n\n", 0.6)
    result = audit.finish(1.0, End.UPSTREAM_EOF)
    # (no `index`: the AI SDK rejects such a chunk, so `malformed_frame`, not a broken call)
    assert (result.outcome.value, result.anomalies) == ("complete", ["malformed_frame"]), result.reasons
    assert result.tool_calls == (1 if where == "before the call" else 0)


@pytest.mark.parametrize(
    ("args_done", "item_done", "invalid"),
    [('{"city":"Paris"}', '{"city":"Paris"}', False), ('{"city":"Paris"}', '{"city":"Berlin"}', True)],
)
def test_both_events_that_repeat_a_calls_arguments_are_checked(
    args_done: str, item_done: str, invalid: bool
) -> None:
    """Responses repeats a call's arguments in `function_call_arguments.done` and again in
    `output_item.done`: a client may use either, so both are checked against the fragments (a
    second pass: checking one call once let the second differ unseen)."""
    item = {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "w", "arguments": ""}
    events: list[dict[str, object]] = [
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {
            "type": "response.function_call_arguments.delta",
            "output_index": 0,
            "item_id": "fc_1",
            "delta": '{"city":',
        },
        {
            "type": "response.function_call_arguments.delta",
            "output_index": 0,
            "item_id": "fc_1",
            "delta": '"Paris"}',
        },
        {
            "type": "response.function_call_arguments.done",
            "output_index": 0,
            "item_id": "fc_1",
            "arguments": args_done,
        },
        {"type": "response.output_item.done", "output_index": 0, "item": {**item, "arguments": item_done}},
        {"type": "response.completed", "response": {"id": "r", "status": "completed"}},
    ]
    audit = StreamAudit(Responses(), 0.0)
    for i, event in enumerate(events):
        audit.feed(b"data: " + json.dumps(event).encode() + b"\n\n", 0.1 * (i + 1))
    result = audit.finish(1.0, End.UPSTREAM_EOF)
    assert ("invalid_tool_arguments" in result.anomalies) is invalid, result.reasons


def _done(arguments: str) -> bytes:
    done = {"type": "response.function_call_arguments.done", "output_index": 0, "item_id": "fc_1"}
    return b"data: " + orjson.dumps({**done, "arguments": arguments}) + b"\n\n"


_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'


@pytest.mark.parametrize(
    ("arguments", "closed", "judged"),
    [
        ('{"city": Paris', False, True),  # no JSON goes on: the anthropic SDK raises here
        ("c", False, True),
        ('{"city": Paris', True, True),
        ("[1, 2", False, True),  # never an object
        ('{"city": "Par', True, False),  # whole so far: a limit may have cut it, its reason to come
        ('{"city": "Par', False, False),
        ('{"city": tr', False, False),
        ("  ", False, False),
        ('{"city": "Paris"}', True, False),
    ],
)
@pytest.mark.parametrize("dialect", [AnthropicMessages, Responses, ChatCompletions], ids=lambda d: d.__name__)
def test_arguments_no_json_can_go_on_from_are_judged_when_the_client_leaves(
    dialect: type[Dialect], arguments: str, closed: bool, judged: bool
) -> None:
    # The anthropic Python SDK parses a call's arguments as they grow, raises at such a
    # fragment and leaves: the stream ended with the client, judged on nothing (outside reviews).
    frame = {AnthropicMessages: _anthropic, Responses: _responses, ChatCompletions: _chat}[dialect]
    audit = StreamAudit(dialect(), 0.0)
    audit.feed(frame(arguments, True), 0.01)
    if closed and dialect is AnthropicMessages:
        audit.feed(_STOP, 0.02)
    elif closed and dialect is Responses:
        audit.feed(_done(arguments), 0.02)
    result = audit.finish(0.03, End.CLIENT_GONE)
    assert result.outcome.value == "client_disconnect"
    assert ("invalid_tool_arguments" in result.anomalies) is judged, result.reasons
    if judged:
        assert "1 of 1 tool call had arguments" in " ".join(result.reasons)


def test_a_done_that_contradicts_the_fragments_is_judged_when_the_client_leaves() -> None:
    audit = StreamAudit(Responses(), 0.0)
    audit.feed(_responses('{"city": "Par', True), 0.01)
    audit.feed(_done('{"city": "Rome"}'), 0.02)
    assert "invalid_tool_arguments" in audit.finish(0.03, End.CLIENT_GONE).anomalies


@pytest.mark.parametrize("end", [End.UPSTREAM_EOF, End.UPSTREAM_BROKEN])
@pytest.mark.parametrize("make", [make for _, make in STREAMS], ids=[d.__name__ for d, _ in STREAMS])
def test_a_body_cut_mid_arguments_is_a_cut_not_bad_arguments(
    make: Callable[[str, bool], bytes], end: End
) -> None:
    """`{"city":` could still have become an object: the upstream cut it, the model made no
    error (an outside review: the anomaly's rate mixed network cuts with model errors). What
    no JSON object can go on from is flagged however the stream ended."""
    dialect = next(d for d, m in STREAMS if m is make)
    for pieces, flagged in ((['{"city":'], False), (['{"city": Paris'], True)):
        audit = StreamAudit(dialect(), 0.0)
        for i, piece in enumerate(pieces):
            audit.feed(make(piece, i == 0), 0.01 * (i + 1))
        result = audit.finish(1.0, end)
        assert result.outcome == "truncated", result.anomalies
        assert ("invalid_tool_arguments" in result.anomalies) is flagged, (pieces, result.anomalies)


def test_arguments_finished_then_cut_before_done_are_judged() -> None:
    """Every choice finished (`tool_calls`), then the body ended without `[DONE]`: the
    arguments were whole, and a half object among them is the model's or the gateway's."""
    audit = StreamAudit(ChatCompletions(), 0.0)
    audit.feed(_chat('{"city":', True), 0.01)
    finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
    audit.feed(b"data: " + orjson.dumps(finish) + b"\n\n", 0.02)
    result = audit.finish(1.0, End.UPSTREAM_EOF)
    assert result.outcome == "truncated" and "invalid_tool_arguments" in result.anomalies, result.anomalies


def test_a_finished_choices_bad_arguments_are_judged_though_another_choice_was_cut() -> None:
    """n=2: choice 0 finished (`tool_calls`) with a half object, choice 1 was cut mid-answer.
    Choice 0's arguments were whole when its finish came (a second review: the cut of the
    other choice hid them)."""

    def chunk(choice: dict[str, object]) -> bytes:
        return b"data: " + orjson.dumps({"choices": [choice]}) + b"\n\n"

    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1'}}
    audit = StreamAudit(ChatCompletions(), 0.0)
    audit.feed(chunk({"index": 0, "delta": {"tool_calls": [call]}}), 0.01)
    audit.feed(chunk({"index": 1, "delta": {"content": "hel"}}), 0.02)
    audit.feed(chunk({"index": 0, "delta": {}, "finish_reason": "tool_calls"}), 0.03)
    audit.feed(chunk({"index": 1, "delta": {"content": "lo"}}), 0.04)
    result = audit.finish(1.0, End.UPSTREAM_EOF)
    assert result.outcome == "truncated" and "invalid_tool_arguments" in result.anomalies, result.anomalies
    # ... but not when its finish was a limit's, which cut the arguments where they stood
    audit = StreamAudit(ChatCompletions(), 0.0)
    audit.feed(chunk({"index": 0, "delta": {"tool_calls": [call]}}), 0.01)
    audit.feed(chunk({"index": 1, "delta": {"content": "hel"}}), 0.02)
    audit.feed(chunk({"index": 0, "delta": {}, "finish_reason": "length"}), 0.03)
    assert "invalid_tool_arguments" not in audit.finish(1.0, End.UPSTREAM_EOF).anomalies
