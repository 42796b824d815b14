"""Evidence for incidents (issue 15): the timeline on /streams/{trace_id}, the evidence file,
evidence-to-case from a live stream, `stream_evidence` log lines, --instance-header."""

from __future__ import annotations

import asyncio
import io
import json
import pathlib
import socket
import sys
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from yarl import URL

from sse_audit_proxy.cli.main import main
from sse_audit_proxy.core.audit import End, Thresholds
from sse_audit_proxy.server.proxy import INSTANCE
from sse_audit_proxy.sinks import logs
from sse_audit_proxy.tools.scenarios import SCENARIOS
from tests.reliability_support import Tally, streaming_handler

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "unit" / "conformance"))
import contextlib

from test_conformance import CASES as CONFORMANCE_CASES
from test_conformance import TIMING_ANOMALIES, load, observed, splits, untimed

PROMPT = "PROMPT-TEXT-please-summarise-the-incident-report"
COMPLETION = "COMPLETION-TEXT-the-answer-nobody-may-log"
FAST = {
    "X-Demo-Frames": "12",
    "X-Demo-TTFT-Ms": "10",
    "X-Demo-Interval-Ms": "8",
    "X-Demo-Jitter": "0",
    "X-Demo-Fault-Ms": "300",
}


def chat(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "messages": [{"role": "user", "content": PROMPT}],
    }


async def demo_stream(http: aiohttp.ClientSession, running: Any, scenario: str, trace_id: str) -> None:
    async with http.post(
        running.url / "v1/chat/completions",
        json=chat(f"demo-{scenario}"),
        headers={**FAST, "X-Client-Request-Id": trace_id},
    ) as resp:
        with contextlib.suppress(aiohttp.ClientPayloadError):
            await resp.read()
    await running.record()


async def get_json(http: aiohttp.ClientSession, url: Any) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def test_stream_lookup_has_the_timeline_and_reasons(
    demo_gateway: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    running = await proxy(await demo_gateway())
    await demo_stream(http, running, "buffered", "trace-buffered-1")
    status, doc = await get_json(http, running.metrics_url / "streams/trace-buffered-1")
    assert status == 200
    (rec,) = doc["streams"]
    assert rec["anomalies"] == ["buffered"]
    assert rec["reasons"][0].startswith("buffered: first token after ")
    rows = rec["timeline"]["rows"]
    assert [k for _, k in rows].count("content") == 12
    assert rows[-1][1] == "terminal" and {"finish", "usage"} <= {k for _, k in rows}
    assert len({t for t, _ in rows}) <= 2  # buffered: everything came in one or two reads


async def test_evidence_file_is_self_contained_redacted_and_text_free(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Set-Cookie": "session=abcdef0123456789",
                "X-Debug": "Bearer sk-abcdefghijklmnopqrstuvwx",
                "X-Gateway-Region": "eu-west-1",
            }
        )
        await resp.prepare(request)
        role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        await resp.write(b"data: " + json.dumps(role).encode() + b"\n\n")
        for _ in range(3):
            body = {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": COMPLETION}}],
            }
            await resp.write(b"data: " + json.dumps(body).encode() + b"\n\n")
            await asyncio.sleep(0.01)
        return resp  # no finish, no [DONE]: truncated

    running = await proxy(await upstream(handler))
    async with http.post(
        running.url / "v1/chat/completions", json=chat("m"), headers={"X-Client-Request-Id": "trace-ev-1"}
    ) as resp:
        await resp.read()
    await running.record()
    async with http.get(running.metrics_url / "streams/trace-ev-1/evidence") as resp:
        assert resp.status == 200
        text = await resp.text()
    doc = json.loads(text)
    assert PROMPT not in text and COMPLETION not in text
    assert "abcdef0123456789" not in text and "sk-abcdefghijklmnop" not in text
    headers = dict(doc["response"]["headers"])
    assert headers["Set-Cookie"] == "[redacted]"
    assert headers["Content-Type"] == "text/event-stream"  # how it was framed: shown
    assert headers["X-Gateway-Region"] == "eu-west-1"  # a kind of field evidence shows
    assert headers["X-Debug"] == "<34>"  # any other upstream text: its length
    assert doc["request"]["route"] == "chat_completions"
    assert doc["request"]["shape"]["messages"] == 1
    assert doc["request"]["shape"]["temperature"] == 0.2
    assert doc["request"]["include_usage"] is True
    assert doc["verdict"]["outcome"] == "truncated"
    assert doc["verdict"]["reasons"][0].startswith("truncated: body ended after 3 content frames")
    content = [f for f in doc["frames"] if f["kind"] == "content"]
    assert content[0]["skeleton"]["data"]["choices"][0]["delta"]["content"] == (f"<{len(COMPLETION)}>")
    assert doc["timeline"]["frames"] == 4


async def json_answer(request: web.Request) -> web.Response:
    return web.Response(text="{}", content_type="application/json")


async def test_unknown_trace_id_has_no_evidence(
    proxy: Any, upstream: Any, http: aiohttp.ClientSession
) -> None:
    running = await proxy(await upstream(json_answer))
    status, doc = await get_json(http, running.metrics_url / "streams/nope/evidence")
    assert status == 404 and doc["error"]["code"] == "trace_id_not_found"


async def test_evidence_of_a_stream_the_upstream_never_saw_keeps_the_requests_shape(
    proxy: Any, http: aiohttp.ClientSession
) -> None:
    """An upstream that refuses the connection: the incident whose request matters most had
    `stream`, `include_usage` and the shape blank in its evidence (docs-as-written review)."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    running = await proxy(URL(f"http://127.0.0.1:{port}"))
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.2}
    async with http.post(
        running.url / "v1/chat/completions", json=body, headers={"X-Client-Request-Id": "gone"}
    ) as resp:
        assert resp.status == 502
    status, doc = await get_json(http, running.metrics_url / "streams/gone/evidence")
    assert status == 200
    request = doc["request"]
    assert (request["stream"], request["include_usage"]) == (True, True)
    assert request["shape"]["temperature"] == 0.2


# Every streamed demo scenario (not `hang` and `cancel`, whose ends a test client would have to
# stage, nor the `http-*` ones, which bring no frame), and the Responses shape's main ones.
REPLAYED = [
    ("chat", s.name) for s in SCENARIOS if s.name not in ("hang", "cancel") and not s.name.startswith("http-")
]
REPLAYED += [
    ("responses", name)
    for name in ("healthy", "buffered", "truncated", "tool-call", "bad-tool-args", "bursty")
]


@pytest.mark.parametrize(("route", "scenario"), REPLAYED, ids=[f"{r}-{s}" for r, s in REPLAYED])
async def test_an_incident_becomes_a_conformance_case_in_one_step(
    route: str,
    scenario: str,
    demo_gateway: Any,
    proxy: Any,
    http: aiohttp.ClientSession,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    running = await proxy(await demo_gateway())
    trace = f"incident-{route}-{scenario}"
    if route == "chat":
        await demo_stream(http, running, scenario, trace)
    else:
        body = {"model": f"demo-{scenario}", "stream": True, "input": PROMPT}
        async with http.post(
            running.url / "v1/responses", json=body, headers={**FAST, "X-Client-Request-Id": trace}
        ) as resp:
            with contextlib.suppress(aiohttp.ClientPayloadError):
                await resp.read()
        await running.record()
    async with http.get(running.metrics_url / f"streams/{trace}/evidence") as resp:
        (tmp_path / "evidence.json").write_bytes(await resp.read())
    evidence = json.loads((tmp_path / "evidence.json").read_text())
    recorded = evidence["stream"]
    # One reason per verdict that needs one, each naming it: the outcome's (unless complete),
    # then the anomalies' in order; each a sentence with the stream's own figures.
    reasons = evidence["verdict"]["reasons"]
    named = [] if recorded["outcome"] == "complete" else [recorded["outcome"]]
    assert [r.split(": ", 1)[0] for r in reasons] == named + recorded["anomalies"]
    assert all(len(r.split(": ", 1)[1]) > 20 for r in reasons)

    assert (
        main(["evidence-to-case", str(tmp_path / "evidence.json"), "--out", str(tmp_path / "conformance")])
        == 0
    )
    assert "(reproduced)" in capsys.readouterr().out
    (case_path,) = (tmp_path / "conformance" / "cases").glob("*.json")
    case = load(case_path)
    assert case.expected["stream"] == recorded
    assert observed(case.replay_timed()) == recorded  # the same verdict, at the same times
    for pieces in list(splits(case))[:50]:  # ... and, timing aside, however it is cut
        assert untimed(observed(case.replay(pieces))) == untimed(recorded)
    assert PROMPT not in case_path.read_text()
    if scenario in ("buffered", "bursty"):
        assert scenario in recorded["anomalies"] and scenario in TIMING_ANOMALIES


def ollama_ndjson(fail: bool) -> Any:
    """Ollama's native `/api/chat` with `"stream": true`: one JSON object per line; failing,
    an `{"error": ...}` line after the output and a clean end (its server/routes.go)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        for i in range(5):
            line = {
                "model": "llama3",
                "message": {"role": "assistant", "content": COMPLETION[i::5]},
                "done": False,
            }
            await resp.write(json.dumps(line).encode() + b"\n")
            await asyncio.sleep(0.005)
        last = (
            {"error": "model runner stopped"} if fail else {"model": "llama3", "done": True, "eval_count": 5}
        )
        await resp.write(json.dumps(last).encode() + b"\n")
        await resp.write_eof()
        return resp

    return handler


@pytest.mark.parametrize("fail", [False, True], ids=["done", "error-line"])
async def test_a_json_lines_stream_becomes_a_case_that_reproduces_it(
    fail: bool, upstream: Any, proxy: Any, http: aiohttp.ClientSession, tmp_path: pathlib.Path, capsys: Any
) -> None:
    """The rebuilt body is JSON lines again, replayed as the proxy reads them: SSE frames under
    an x-ndjson label read as `wrong_content_type`, and lost the error line's verdict."""
    running = await proxy(await upstream(ollama_ndjson(fail)))
    body = {"model": "llama3", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    async with http.post(
        running.url / "api/chat", json=body, headers={"X-Client-Request-Id": "nd-1"}
    ) as resp:
        await resp.read()
    await running.record()
    async with http.get(running.metrics_url / "streams/nd-1/evidence") as resp:
        (tmp_path / "evidence.json").write_bytes(await resp.read())
    evidence = json.loads((tmp_path / "evidence.json").read_text())
    recorded = evidence["stream"]
    want = ("upstream_error", ["error_event"]) if fail else ("complete", [])
    assert (recorded["outcome"], recorded["anomalies"]) == want
    assert '"done"' in json.dumps(evidence["frames"])  # Ollama's end marker, legible in evidence
    out = tmp_path / "conformance"
    assert main(["evidence-to-case", str(tmp_path / "evidence.json"), "--out", str(out)]) == 0
    assert "(reproduced)" in capsys.readouterr().out
    (case_path,) = (out / "cases").glob("*.json")
    case = load(case_path)
    assert observed(case.replay_timed()) == recorded
    (stream_path,) = (out / "streams").iterdir()
    assert b"data:" not in stream_path.read_bytes()  # JSON lines, as they came
    assert PROMPT not in case_path.read_text() and COMPLETION[0::5] not in stream_path.read_text()


def odd_finish_reason() -> Any:
    """A gateway's own finish reason that is no protocol word (`"max tokens"`), kept as `other`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, reason in enumerate([None, None, "max tokens"]):
            choice = {"index": 0, "delta": {"content": COMPLETION[i::3]}, "finish_reason": reason}
            await resp.write(b"data: " + json.dumps({"id": "c", "choices": [choice]}).encode() + b"\n\n")
            await asyncio.sleep(0.005)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    return handler


async def test_a_finish_reason_that_is_no_word_is_replayed_as_none_either(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession, tmp_path: pathlib.Path, capsys: Any
) -> None:
    """Its placeholder came back as `xxxxxxxxxx`, a protocol word, so the replay reported it
    where the record said `other`, and the documented workflow refused the case."""
    running = await proxy(await upstream(odd_finish_reason()))
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    headers = {"X-Client-Request-Id": "odd-1"}
    async with http.post(running.url / "v1/chat/completions", json=body, headers=headers) as resp:
        await resp.read()
    await running.record()
    async with http.get(running.metrics_url / "streams/odd-1/evidence") as resp:
        (tmp_path / "evidence.json").write_bytes(await resp.read())
    assert json.loads((tmp_path / "evidence.json").read_text())["stream"]["finish_reasons"] == ["other"]
    out = tmp_path / "conformance"
    assert main(["evidence-to-case", str(tmp_path / "evidence.json"), "--out", str(out)]) == 0
    assert "(reproduced)" in capsys.readouterr().out


def data_only_images() -> Any:
    """A gateway that drops `event:` lines: two partial images larger than the proxy's
    --max-frame-bytes, then a clean end without the completed event."""
    docs = [
        {"type": "image_generation.partial_image", "partial_image_index": i, "b64_json": "QUJD" * 3000}
        for i in range(2)
    ]
    return streaming_handler(
        [b"data: " + json.dumps(doc).encode() + b"\n\n" for doc in docs], Tally(), delay=0.01
    )


async def test_evidence_of_a_proxy_with_other_thresholds_replays_with_them(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession, tmp_path: pathlib.Path, capsys: Any
) -> None:
    """Evidence from a proxy at --max-frame-bytes 4096 was replayed at the default 1 MiB, read
    its frames, and the case was refused (a second review). The evidence names the flags."""
    running = await proxy(await upstream(data_only_images()), thresholds=Thresholds(max_frame_bytes=4096))
    body = {"model": "gpt-image-1", "prompt": PROMPT, "stream": True, "partial_images": 2}
    headers = {"X-Client-Request-Id": "img-1"}
    async with http.post(running.url / "v1/images/generations", json=body, headers=headers) as resp:
        await resp.read()
    rec = await running.record()
    assert rec.stream is not None
    # Named by their leading type: two content frames, then no end event: cut.
    assert (rec.stream.outcome.value, rec.stream.content_frames) == ("truncated", 2)
    async with http.get(running.metrics_url / "streams/img-1/evidence") as resp:
        (tmp_path / "evidence.json").write_bytes(await resp.read())
    assert json.loads((tmp_path / "evidence.json").read_text())["thresholds"] == {"max_frame_bytes": 4096}
    out = tmp_path / "conformance"
    assert main(["evidence-to-case", str(tmp_path / "evidence.json"), "--out", str(out)]) == 0
    assert "(reproduced)" in capsys.readouterr().out
    (case_path,) = (out / "cases").glob("*.json")
    assert load(case_path).thresholds == Thresholds(max_frame_bytes=4096)


def test_evidence_to_case_refuses_a_request_that_was_not_a_stream(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "e.json").write_text(json.dumps({"trace_id": "x", "stream": None, "timeline": None}))
    assert main(["evidence-to-case", str(tmp_path / "e.json"), "--out", str(tmp_path)]) == 2
    assert "no stream to replay" in capsys.readouterr().err


# stream_evidence log lines ------------------------------------------------------------------


@pytest.fixture
def log_lines() -> Any:
    """The proxy's JSON log lines, as a shipper reads them (one JSON object per line)."""
    out = io.BytesIO()
    logs.configure_logging("json")
    structlog.configure(logger_factory=structlog.BytesLoggerFactory(out))

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in out.getvalue().splitlines()]

    yield lines
    structlog.reset_defaults()


async def test_every_anomalous_stream_logs_its_evidence_as_one_json_line(
    log_lines: Any, demo_gateway: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    running = await proxy(await demo_gateway())
    await demo_stream(http, running, "healthy", "trace-ok")
    await demo_stream(http, running, "truncated", "trace-cut")
    events = log_lines()
    evidence = [e for e in events if e["event"] == "stream_evidence"]
    assert [e["trace_id"] for e in evidence] == ["trace-cut"]  # not the healthy one
    (line,) = evidence
    assert line["outcome"] == "truncated" and line["level"] == "info"
    doc = line["evidence"]
    assert line["upstream"] == doc["upstream"] == "baseline"  # top-level: a side's evidence alone
    assert doc["trace_id"] == "trace-cut" and doc["timeline"]["frames"] > 0
    assert doc["verdict"]["reasons"][0].startswith("truncated: ")
    ends = [e for e in events if e["event"] == "stream_end" and e["trace_id"] == "trace-cut"]
    assert ends and ends[0]["reasons"] == doc["verdict"]["reasons"]
    raw = json.dumps(events)
    assert PROMPT not in raw


async def test_instance_header_is_opt_in_and_a_response_header_only(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession
) -> None:
    heard: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        heard.extend(name.lower() for name in request.headers)
        return await json_answer(request)

    up = await upstream(answer)
    plain = await proxy(up)
    named = await proxy(up, instance_header="X-Audit-Instance")
    async with http.get(plain.url / "v1/models") as resp:
        assert "X-Audit-Instance" not in resp.headers
    async with http.get(named.url / "v1/models") as resp:
        assert resp.headers["X-Audit-Instance"] == INSTANCE
    assert heard and "x-audit-instance" not in heard  # the gateway was sent it too


async def test_evidence_is_found_whichever_worker_relayed_the_stream(
    demo_gateway: Any, http: aiohttp.ClientSession
) -> None:
    from cli_process import serve_process
    from demo_client import FAST as GATEWAY_FAST
    from demo_client import send

    async with serve_process(
        await demo_gateway(**GATEWAY_FAST), "--workers", "2", "--instance-header", "X-Audit-Instance"
    ) as served:
        # A fresh connection per request: SO_REUSEPORT balances connections.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            for i in range(12):
                await send(s, served.url, "truncated", trace_id=f"wk{i}")
        instances = set()
        for i in range(12):
            status, doc = await get_json(http, served.metrics_url / f"streams/wk{i}/evidence")
            assert status == 200, doc
            assert doc["trace_id"] == f"wk{i}" and doc["verdict"]["outcome"] == "truncated"
            instances.add(doc["instance"])
            status, found = await get_json(http, served.metrics_url / f"streams/wk{i}")
            assert found["streams"][0]["timeline"]["frames"] > 0
        assert len(instances) == 2  # both workers relayed some, each answered for its own
        assert await served.stop() == 0
        evidence_lines = [x for x in served.lines if x.get("event") == "stream_evidence"]
        assert len(evidence_lines) == 12


def test_the_suite_wide_text_scan_catches_a_record_carrying_prompt_text() -> None:
    from conftest import RecordingSink, leaked_keys

    from sse_audit_proxy.core.record import AuditRecord

    sink = RecordingSink()
    sink.record(AuditRecord("t", "chat_completions", "POST", "m", 200, 0.0, 0.1, 1, None))
    assert sink.leaks == []
    sink.record(AuditRecord("t2", "chat_completions", "POST", PROMPT, 200, 0.0, 0.1, 1, None))
    assert sink.leaks == [("t2", ["PROMPT-TEXT-"])]
    assert leaked_keys(f"log line with {COMPLETION}") == ["COMPLETION-TEXT-"]


async def test_a_logged_evidence_line_is_an_evidence_file_for_evidence_to_case(
    log_lines: Any,
    demo_gateway: Any,
    proxy: Any,
    http: aiohttp.ClientSession,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    running = await proxy(await demo_gateway())
    await demo_stream(http, running, "no-done", "trace-from-logs")
    (line,) = [e for e in log_lines() if e["event"] == "stream_evidence"]
    (tmp_path / "from-logs.json").write_text(json.dumps(line["evidence"]))
    assert (
        main(
            [
                "evidence-to-case",
                str(tmp_path / "from-logs.json"),
                "--out",
                str(tmp_path / "c"),
                "--name",
                "from_logs",
            ]
        )
        == 0
    )
    assert "(reproduced)" in capsys.readouterr().out
    case = load(tmp_path / "c" / "cases" / "from_logs.json")
    assert observed(case.replay_timed()) == line["evidence"]["stream"]


# Every recorded conformance stream, through the real proxy, back into a case. Known limits
# (docs/operate/evidence.md): frames without a skeleton of their own are rebuilt from
# the first skeleton of their kind, so streams whose tool calls differ only by what that loses
# come back different, and evidence-to-case refuses them (exit 1) instead of writing a case
# that would not reproduce.
REBUILT_DIFFERENTLY = {
    "chat_tool_calls_without_index",  # calls told apart by their id alone
    "cohere_v2_chat_broken_tool_arguments",  # the tool-call frames rebuilt from the plan's
    "messages_invalid_tool_input",  # the invalid input was in a frame rebuilt from another
    "messages_litellm_split_tool_blocks_client_left",  # likewise, a block's fragment each
    "chat_gzip_members",  # a case's body is rebuilt plain: its gzip members are not
    "chat_gzip_label_plain_body",  # ... and unlabelled: the label the body lacked is not
}
RECORDED = [p for p in CONFORMANCE_CASES if "timed" not in p.read_text()]


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
async def test_every_recorded_stream_comes_back_from_its_evidence(
    path: pathlib.Path,
    upstream: Any,
    proxy: Any,
    http: aiohttp.ClientSession,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = load(path)

    async def serve(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(status=case.status, headers=case.headers)
        await resp.prepare(request)
        await resp.write(case.body)
        return resp

    running = await proxy(await upstream(serve))
    async with http.post(
        running.url.with_path(case.path), json=case.request, headers={"X-Client-Request-Id": "recorded"}
    ) as resp:
        await resp.read()
    await running.record()
    async with http.get(running.metrics_url / "streams/recorded/evidence") as resp:
        (tmp_path / "e.json").write_bytes(await resp.read())
    doc = json.loads((tmp_path / "e.json").read_text())
    code = main(
        ["evidence-to-case", str(tmp_path / "e.json"), "--out", str(tmp_path / "c"), "--name", "back"]
    )
    if doc["stream"] is None or not doc["timeline"]["frames"]:  # nothing to replay: it says so
        assert code == 2 and not (tmp_path / "c").exists()
        assert "has no stream to replay" in capsys.readouterr().err
        return
    if case.name in REBUILT_DIFFERENTLY:
        assert code == 1 and not (tmp_path / "c").exists()
        return
    assert code == 0
    back = load(tmp_path / "c" / "cases" / "back.json")
    assert observed(back.replay_timed()) == doc["stream"]
    if case.end is End.UPSTREAM_EOF:  # (a socket replay ends the body cleanly: see conformance)
        assert untimed(doc["stream"]) == untimed(case.expected["stream"])  # what the proxy saw
