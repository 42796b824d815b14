"""The probe's pure parts: the API readers, the gates and the redaction, on hand-made evidence."""

from __future__ import annotations

import io
import re
from typing import Any

import orjson
import pytest
from yarl import URL

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects import dialect_for_route, route_for_path
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.sse import Event, SSEDecoder
from sse_audit_proxy.tools.gateway.plan import Prompt, plan
from sse_audit_proxy.tools.gateway.shapes import Shape, responses_stream
from sse_audit_proxy.tools.probe import gates
from sse_audit_proxy.tools.probe.chat import ChatApi
from sse_audit_proxy.tools.probe.client import Exchange, Sender
from sse_audit_proxy.tools.probe.facts import Answer, StreamFacts
from sse_audit_proxy.tools.probe.gates import Status
from sse_audit_proxy.tools.probe.report import (
    Redactor,
    colour_on,
    render_text,
    save_raw,
    shown_headers,
    shown_response_headers,
)
from sse_audit_proxy.tools.probe.responses import ResponsesApi
from sse_audit_proxy.tools.probe.runner import RouteRun, Settings, Target

CHAT, RESPONSES = ChatApi(), ResponsesApi()


def chunk(**fields: Any) -> Event:
    return Event("", orjson.dumps({"id": "c1", "object": "chat.completion.chunk", **fields}))


def delta(content: str, index: int = 0, finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": {"content": content}, "finish_reason": finish}


def timed(events: list[Event]) -> list[tuple[float, Event]]:
    return [(i * 0.01, e) for i, e in enumerate(events)]


def typed(kind: str, seq: int, **fields: Any) -> Event:
    return Event(kind, orjson.dumps({"type": kind, "sequence_number": seq, **fields}))


DONE = Event("", b"[DONE]")


# Chat Completions streams -----------------------------------------------------------------


def test_a_clean_chat_stream_has_no_framing_problem_and_reads_text_usage_and_finish() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    f = CHAT.read_stream(
        timed(
            [
                chunk(choices=[delta("Hel")]),
                chunk(choices=[delta("lo", finish="stop")]),
                chunk(choices=[], usage=usage),
                DONE,
            ]
        )
    )
    assert f.problems == []
    assert (f.text, f.finish_reasons, f.usage, f.done) == ("Hello", ["stop"], usage, True)
    assert f.usage_where == "chunk 3, with `choices: []`"
    assert f.content_at == [0.0, 0.01]


def test_azure_annotation_chunks_without_id_or_object_are_no_framing_fault() -> None:
    # Azure's prompt-filter chunk comes first, with "" for id, object and model (recorded:
    # tests/unit/conformance/streams/chat_azure_prompt_filter_results.sse).
    filters = Event(
        "",
        orjson.dumps(
            {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": []}
        ),
    )
    f = CHAT.read_stream(timed([filters, chunk(choices=[delta("Hi", finish="stop")]), DONE]))
    assert f.problems == []
    assert (f.ids, f.objects) == (["c1"], ["chat.completion.chunk"])
    # A gateway whose every chunk says "" is still told its chunks carry no id.
    blank = Event("", orjson.dumps({"id": "", "object": "", "choices": [delta("Hi", finish="stop")]}))
    assert any("carry no `id`" in p for p in CHAT.read_stream(timed([blank, DONE])).problems)


def test_chat_framing_faults_are_each_named() -> None:
    f = CHAT.read_stream(
        timed(
            [
                chunk(choices=[delta("a"), delta("b", index=1, finish="stop")]),
                Event("", orjson.dumps({"id": "c2", "object": "chat.completion", "choices": []})),
                Event("", b'{"choices": [oops'),
                DONE,
                chunk(choices=[delta("late")]),
            ]
        )
    )
    said = " | ".join(f.problems)
    assert "1 data frame(s) are not JSON objects" in said
    assert "2 different ids (c1, c2)" in said
    assert "'chat.completion.chunk', 'chat.completion'" in said
    assert "no `finish_reason` arrived (choice 0)" in said
    assert "1 frame(s) came after `[DONE]`" in said


def test_a_chat_stream_that_is_one_error_frame_is_one_problem() -> None:
    """LiteLLM answers a failed stream with its `{"error": ...}` frame alone: no id, no
    object, no finish, no `[DONE]`, all of them its consequence. One root cause, one problem."""
    error = Event("", orjson.dumps({"error": {"message": "boom", "type": "server_error", "code": 500}}))
    f = CHAT.read_stream(timed([error]))
    assert len(f.problems) == 1 and f.problems[0].startswith("an error frame came mid-stream (500: boom)")


def test_chat_tool_call_fragments_assemble_even_without_an_index() -> None:
    f = CHAT.read_stream(
        timed(
            [
                chunk(
                    choices=[
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {
                                        "id": "call_1",
                                        "type": "function",
                                        "function": {"name": "get_weather", "arguments": ""},
                                    }
                                ]
                            },
                        }
                    ]
                ),
                chunk(choices=[{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": '{"ci'}}]}}]),
                chunk(
                    choices=[
                        {
                            "index": 0,
                            "delta": {"tool_calls": [{"function": {"arguments": 'ty":1}'}}]},
                            "finish_reason": "tool_calls",
                        }
                    ]
                ),
                DONE,
            ]
        )
    )
    assert f.problems == []
    [call] = f.tool_calls
    assert (call.call_id, call.name, call.arguments) == ("call_1", "get_weather", '{"city":1}')


# Responses streams ------------------------------------------------------------------------


def _gateway_responses() -> list[tuple[float, Event]]:
    """The demo gateway's Responses stream: created at once, then a delta every 10 ms."""
    prompt = Prompt("user: hi", 1, (), None, True, False, None, 7)
    frames = responses_stream(plan(prompt, frames=5), "m", {}, shape=Shape())
    decoder = SSEDecoder()
    out: list[tuple[float, Event]] = []
    for i, data in enumerate([frames.start, *frames.content, frames.tail]):
        out += [(0.1 + i * 0.01, e) for e in decoder.feed(data)]
    return out


def test_the_demo_gateways_responses_stream_reads_clean() -> None:
    f = RESPONSES.read_stream(_gateway_responses())
    assert f.problems == []
    assert f.finish_reasons == ["completed"] and f.terminal and not f.done
    assert f.usage is not None and f.usage["output_tokens"] == 5
    assert len(f.content_at) == 5


def test_responses_framing_faults_are_each_named() -> None:
    resp = {"id": "r1", "status": "completed", "usage": None}
    f = RESPONSES.read_stream(
        timed(
            [
                typed("response.in_progress", 0, response={**resp, "status": "in_progress"}),
                Event(
                    "response.created",
                    orjson.dumps(
                        {
                            "type": "response.output_item.added",
                            "sequence_number": 1,
                            "item": {"id": "msg_1", "type": "message"},
                        }
                    ),
                ),
                typed("response.output_text.delta", 3, item_id="msg_1", delta="hi"),
                typed("response.completed", 4, response={**resp, "id": "r2"}),
                typed("response.output_text.delta", 5, item_id="msg_1", delta="late"),
            ]
        )
    )
    said = " | ".join(f.problems)
    assert "the first event is 'response.in_progress', not 'response.created'" in said
    assert "`event: response.created` line names another type" in said
    assert "`sequence_number` goes from 1 to 3" in said
    assert "2 different response ids (r1, r2)" in said
    assert "msg_1 were added but never finished" in said
    assert "1 event(s) came after response.completed" in said


def test_an_incomplete_response_finishes_with_its_reason_and_a_cut_one_is_named() -> None:
    f = RESPONSES.read_stream(
        timed(
            [
                typed("response.created", 0, response={"id": "r"}),
                typed(
                    "response.incomplete",
                    1,
                    response={
                        "id": "r",
                        "status": "incomplete",
                        "incomplete_details": {"reason": "max_output_tokens"},
                    },
                ),
            ]
        )
    )
    assert f.finish_reasons == ["max_output_tokens"] and f.problems == []
    cut = RESPONSES.read_stream(_gateway_responses()[:6])
    assert any("ended without `response.completed`" in p for p in cut.problems)


def test_the_probe_audits_responses_with_a_dialect_that_counts_only_deltas() -> None:
    dialect = dialect_for_route(route_for_path("/v1/responses"))
    assert dialect.route == "responses"
    assert dialect_for_route(route_for_path("/v1/chat/completions")) is ChatCompletions
    audit = StreamAudit(dialect(), 0.0)
    for t, event in _gateway_responses():
        audit.feed(b"event: " + event.event.encode() + b"\ndata: " + event.data + b"\n\n", t)
    result = audit.finish(0.2, End.UPSTREAM_EOF)
    # response.created came at 0.1 s; the first text delta one write later.
    assert result.ttft == pytest.approx(0.11)
    assert result.content_frames == 5
    assert result.outcome.value == "complete" and result.finish_reasons == ["completed"]


# Gates ------------------------------------------------------------------------------------


def exchange(purpose: str = "stream", **fields: Any) -> Exchange:
    ex = Exchange(
        "probe-x-chat-" + purpose,
        "chat",
        purpose,
        "http://gw/v1/chat/completions",
        {},
        {},
        purpose != "control",
        status=200,
        response_headers=[("Content-Type", "text/event-stream")],
    )
    for name, value in fields.items():
        setattr(ex, name, value)
    return ex


USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def test_usage_gate_cannot_compare_counts_of_two_different_answers() -> None:
    control = exchange("control", answer=Answer(text="one, two", usage=USAGE))
    more = {**USAGE, "completion_tokens": 6, "total_tokens": 16}
    stream = exchange(facts=StreamFacts(usage=more, terminal=True, text="one, two, three"))
    gate = gates.usage(CHAT, control, stream)
    assert gate.status is Status.SKIP and "not deterministic" in gate.summary
    stream.facts = StreamFacts(usage=more, terminal=True, text="one, two")
    assert gates.usage(CHAT, control, stream).status is Status.FAIL


def test_usage_gate_fails_on_prompt_tokens_whatever_the_answer() -> None:
    control = exchange("control", answer=Answer(text="a", usage=USAGE))
    stream = exchange(facts=StreamFacts(usage={**USAGE, "prompt_tokens": 12}, terminal=True, text="b"))
    gate = gates.usage(CHAT, control, stream)
    assert gate.status is Status.FAIL
    assert "prompt_tokens 10 -> 12 (+2)" in gate.problems[0]


def _whole(text: str, finish: str = "stop", usage: dict[str, int] | None = None) -> StreamFacts:
    """A stream that ended as whole: a finish reason, `[DONE]`, the upstream's clean end."""
    return StreamFacts(text=text, finish_reasons=[finish], terminal=True, done=True, usage=usage or USAGE)


def test_a_stream_cut_and_closed_as_whole_fails_framing_alone() -> None:
    """LiteLLM ends a cut upstream stream with `stop`, its own usage and `[DONE]`: the probe
    blamed the usage (billing) and never named the cut (an outside review)."""
    control = exchange("control", answer=Answer(text="one, two, three, four", usage=USAGE))
    made_up = {**USAGE, "prompt_tokens": 9}
    cut = exchange(facts=_whole("one, two", usage=made_up))
    framing = gates.framing(CHAT, cut, control)
    assert framing.status is Status.FAIL
    assert "the first 8 of the 21 characters of the non-streamed answer" in framing.problems[-1]
    usage = gates.usage(CHAT, control, cut)
    assert usage.status is Status.SKIP and "cut short" in usage.summary
    # Not a cut: the whole answer; an answer that differs; one that stopped at its limit;
    # one that broke off (framing names that already, by its missing end).
    for facts in (
        _whole("one, two, three, four"),
        _whole("one, too"),
        _whole("one, two", finish="length"),
        StreamFacts(text="one, two", terminal=False, usage=None),
    ):
        ex = exchange(facts=facts)
        assert not any("non-streamed answer" in p for p in gates.framing(CHAT, ex, control).problems)


def test_a_stream_cut_after_one_content_frame_is_not_called_a_whole_answer_in_one_frame() -> None:
    """llmock cutting after its first content frame failed streaming as well, for a route
    that "streams the finished answer" (an outside review): one cause, one FAIL."""
    control = exchange("control", answer=Answer(text="Hello! How can I help you today?", usage=USAGE))
    frames = [
        orjson.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [delta("Hello! ")]}),
        orjson.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [delta("How can I help?")]}),
    ]

    def streamed(end: End, facts: StreamFacts) -> Exchange:
        audit = StreamAudit(ChatCompletions(), 0.0)
        audit.feed(b"data: " + frames[0] + b"\n\n", 0.5)
        return exchange(facts=facts, result=audit.finish(0.6, end), end=end)

    broken = streamed(End.UPSTREAM_BROKEN, StreamFacts(text="Hello! ", content_at=[0.5]))
    gate = gates.streaming(CHAT, broken, control)
    assert gate.status is Status.PASS and not gate.problems
    whole = streamed(End.UPSTREAM_EOF, _whole("Hello! How can I help you today?"))
    gate = gates.streaming(CHAT, whole, control)  # the finished answer at once: still a FAIL
    assert gate.status is Status.FAIL and "came in one content frame" in gate.problems[0]


@pytest.mark.parametrize(("gap", "said"), [(0.001, True), (0.0001, False), (0.02, False)])
def test_a_long_wait_then_frames_a_millisecond_apart_is_a_note_not_a_verdict(gap: float, said: bool) -> None:
    """LiteLLM replays a buffering upstream's answer a frame a write, 0.45 to 0.53 ms apart:
    about 1 run in 5 passed `streaming` without a word (an outside review). Not `buffered`
    (a fast decoder after a long prefill looks the same), but the table says so."""
    control = exchange("control", answer=Answer(text="x", usage=USAGE))
    audit = StreamAudit(ChatCompletions(), 0.0)
    times = [1.7 + i * gap for i in range(55)]
    for t in times:
        frame = orjson.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [delta("word ")]})
        audit.feed(b"data: " + frame + b"\n\n", t)
    result = audit.finish(times[-1] + 0.01, End.UPSTREAM_EOF)
    facts = _whole("word " * 55)
    facts.content_at = times
    gate = gates.streaming(CHAT, exchange(facts=facts, result=result), control)
    buffered = gap < 0.0005  # released: the proxy's verdict, a FAIL
    assert (gate.status is Status.FAIL) is buffered
    assert any("too fast to tell a fast decoder" in n for n in gate.notes) is said


def test_usage_of_zero_tokens_for_an_answer_is_no_token_count() -> None:
    """aimock's Responses route counts 0 + 0 for a 275-character answer: route and usage
    passed it as "token counts" (an outside review)."""
    zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    answer = Answer(object="chat.completion", model="m", finish="stop", usage=zero, text="Hi there")
    gate = gates.route(CHAT, exchange("control", doc={}, answer=answer), "m")
    assert gate.status is Status.FAIL
    assert "counts 0 for `prompt_tokens` and `completion_tokens`" in gate.problems[0]
    assert "8 characters" in gate.problems[0]
    empty = Answer(object="chat.completion", model="m", finish="stop", text="")
    empty.usage = {**zero, "prompt_tokens": 7}  # no answer, no output tokens: right
    assert gates.route(CHAT, exchange("control", doc={}, answer=empty), "m").status is Status.PASS
    control = exchange("control", answer=Answer(text="Hi there", usage=zero))
    usage = gates.usage(CHAT, control, exchange(facts=_whole("Hi there", usage=zero)))
    assert usage.status is Status.FAIL and usage.problems[0].startswith("streamed: the usage counts 0")


@pytest.mark.parametrize(
    ("doc", "said"),
    [
        ({"detail": "Server is pinned to model-a"}, "Server is pinned to model-a"),
        ({"detail": [{"loc": ["body", "model"], "msg": "field required"}]}, "field required"),
        ({"error": "model not found"}, "model not found"),
        ({"message": "no route"}, "no route"),
        ({"status": "nope"}, '{"status":"nope"}'),
    ],
)
def test_error_bodies_not_shaped_like_openais_still_show_their_message(doc: Any, said: str) -> None:
    """FastAPI's `{"detail": ...}` (transformers serve, LiteLLM's own 404s) was shown as no
    message at all: "see its message" and none (an outside review)."""
    ex = exchange("control", status=400, doc=doc)
    gate = gates.route(CHAT, ex, "m")
    assert f"HTTP 400 ({said})" in gate.problems[0]


def test_route_gate_hints_depend_on_the_status() -> None:
    for status, hint in (
        (401, "--api-key-env"),
        (404, "check --base-url"),
        (429, "Retry-After: 3"),
        (503, "look up trace ID probe-x-chat-control"),
    ):
        ex = exchange(
            "control",
            status=status,
            response_headers=[("Retry-After", "3")],
            doc={"error": {"message": "nope"}},
        )
        gate = gates.route(CHAT, ex, "m")
        assert gate.status is Status.FAIL
        assert f"HTTP {status} (nope)" in gate.problems[0] and hint in gate.problems[0]


def test_route_gate_notes_a_renamed_model_and_fails_without_usage() -> None:
    ex = exchange(
        "control", doc={}, answer=Answer(object="chat.completion", model="other-model", finish="stop")
    )
    gate = gates.route(CHAT, ex, "gpt-4o")
    assert gate.status is Status.FAIL
    assert gate.problems == [
        "the answer carries no usage: token accounting (billing, quotas) sees nothing for this route"
    ]
    assert any("answered as model 'other-model'" in n for n in gate.notes)
    snapshot = exchange(
        "control",
        doc={},
        answer=Answer(object="chat.completion", model="gpt-4o-2024-08-06", finish="stop", usage=USAGE),
    )
    assert gates.route(CHAT, snapshot, "gpt-4o").status is Status.PASS


# Redaction --------------------------------------------------------------------------------


def test_redactor_hides_the_key_raw_and_json_escaped() -> None:
    key = 'sk-"odd\\key'
    r = Redactor(key)
    assert r.text(f"Bearer {key}") == "Bearer [redacted]"
    dumped = orjson.dumps({"h": f"Bearer {key}"})
    assert key.encode() not in r.data(dumped) and b"[redacted]" in r.data(dumped)
    assert Redactor(None).text("anything") == "anything"


def test_extra_headers_with_secret_looking_names_are_hidden_in_the_report() -> None:
    assert shown_headers([("X-Tenant", "a"), ("X-Gateway-Token", "t"), ("Cookie", "c")]) == {
        "X-Tenant": "a",
        "X-Gateway-Token": "[redacted]",
        "Cookie": "[redacted]",
    }


# The table --------------------------------------------------------------------------------


def test_the_table_is_coloured_only_when_asked_and_stays_aligned() -> None:
    run = RouteRun(
        Target("base", URL("http://gw/v1"), "probe-x"),
        started_at=0.0,
        gates=[
            gates.Gate("route", "chat", Status.PASS, "HTTP 200"),
            gates.Gate("usage", "chat", Status.FAIL, "no usage", problems=["fix it"]),
            gates.Gate("tools", "chat", Status.SKIP, "not asked for (--tools)"),
        ],
    )
    settings = Settings(model="m")
    plain = render_text([run], settings, "x", "OPENAI_API_KEY", colour=False)
    coloured = render_text([run], settings, "x", "OPENAI_API_KEY", colour=True)
    assert "\x1b[" not in plain
    assert "\x1b[32mPASS\x1b[0m" in coloured and "\x1b[31;1mFAIL\x1b[0m" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain
    assert "\nFAIL usage (chat)\n  - fix it\n" in plain
    assert "result: FAIL · 1 passed, 1 failed, 1 skipped" in plain


def test_no_color_turns_colour_off_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert colour_on(Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_on(Tty())
    assert not colour_on(io.StringIO())


def test_frames_the_openai_sdk_reads_as_empty_events_fail_framing() -> None:
    ex = exchange(facts=StreamFacts(data_frames=3), empty_events=1)
    gate = gates.framing(CHAT, ex)
    assert gate.status is Status.FAIL
    assert "raises JSONDecodeError" in gate.problems[0]
    assert gate.evidence["empty_events"] == 1


def test_secret_headers_given_with_dash_h_never_reach_the_report_or_captures() -> None:
    key, sub = "sk-proj-0123456789abcdef", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    r = Redactor(key, [("Ocp-Apim-Subscription-Key", sub), ("Cookie", "a=1"), ("X-Tenant", "acme-tenant")])
    escaped = "".join(f"\\u{ord(c):04X}" for c in sub)  # a gateway's JSON echo, all escaped
    body = orjson.dumps({"error": f"bad key {key} / {sub}"}) + b" " + escaped.encode()
    out = r.data(body)
    assert key.encode() not in out and sub.encode() not in out and escaped.encode() not in out
    assert out.count(b"[redacted]") == 3
    assert r.text("acme-tenant a=1") == "acme-tenant a=1"  # not secret, or too short to search for
    sender = Sender(None, (("Ocp-Apim-Subscription-Key", sub), ("X-Tenant", "acme")), None, 1.0)  # type: ignore[arg-type]
    sent, shown = sender.request_headers("t", stream=True)
    assert sent["Ocp-Apim-Subscription-Key"] == sub
    assert shown["Ocp-Apim-Subscription-Key"] == "[redacted]" and shown["X-Tenant"] == "acme"
    assert shown_response_headers([("Set-Cookie", "s=abc"), ("X-Request-Id", "req_sk-proj-0123456789")]) == {
        "Set-Cookie": "[redacted]",
        "X-Request-Id": "req_[redacted]",
    }


def test_a_stream_answered_with_a_json_error_and_status_200_fails_framing_with_its_message() -> None:
    ex = exchange(
        response_headers=[("Content-Type", "application/json")],
        doc={"error": {"message": "model overloaded"}},
        facts=StreamFacts(),
    )
    gate = gates.framing(CHAT, ex)
    assert gate.status is Status.FAIL
    assert gate.problems[0].startswith(
        "the stream was answered with HTTP 200 and an error in a JSON body (model overloaded)"
    )
    ex.doc = {"choices": []}
    assert "not text/event-stream" in gates.framing(CHAT, ex).problems[0]


def test_a_compressed_capture_holding_a_secret_is_saved_decoded_and_scrubbed(tmp_path: Any) -> None:
    import gzip

    key = "sk-proj-0123456789abcdef"
    echoed = gzip.compress(b'{"error": {"message": "Incorrect API key provided: ' + key.encode() + b'"}}')
    plain = gzip.compress(b'{"error": {"message": "model overloaded"}}')
    runs = []
    for trace, body in (("probe-x-leak", echoed), ("probe-x-plain", plain)):
        ex = exchange("control", trace_id=trace, response_headers=[("Content-Encoding", "gzip")])
        ex.chunks = [(0.01, body)]
        runs.append(ex)
    run = RouteRun(Target("base", URL("http://gw/v1"), "probe-x"), started_at=0.0, exchanges=runs)
    saved = save_raw(tmp_path, [run], Redactor(key))
    # No search of gzip's bytes finds the key: that body is kept decoded, and scrubbed.
    assert saved["probe-x-leak"] == "probe-x-leak.json"
    leak = (tmp_path / "probe-x-leak.json").read_bytes()
    assert key.encode() not in leak and b"[redacted]" in leak
    assert orjson.loads((tmp_path / "probe-x-leak.meta.json").read_bytes())["capture_decoded"] is True
    # One with nothing to scrub stays as received.
    assert (tmp_path / saved["probe-x-plain"]).read_bytes() == plain
    assert saved["probe-x-plain"].endswith(".json.gz")


def test_the_route_gate_shows_response_headers_as_evidence_does() -> None:
    ex = exchange(
        "control",
        status=200,
        response_headers=[("Set-Cookie", "session=SECRETVALUE123456"), ("X-Request-Id", "req-1")],
        answer=Answer(),
    )
    shown = gates.route(CHAT, ex, "m").evidence["response_headers"]
    assert shown == {"Set-Cookie": "[redacted]", "X-Request-Id": "req-1"}


def test_a_short_key_is_not_searched_for_and_a_url_encoded_echo_is() -> None:
    assert Redactor("true").data(b'{"api_key_sent": true}') == b'{"api_key_sent": true}'
    key = "sk-proj-abc/def+ghi=0123456789"
    out = Redactor(key).text("GET /v1?key=sk-proj-abc%2Fdef%2Bghi%3D0123456789")
    assert "sk-proj-abc" not in out and "[redacted]" in out
