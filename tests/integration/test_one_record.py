"""Exactly one audit record per request, by construction (issue 14).

Faults are injected into the audit (the SSE decoder, a dialect's summary, the verdict), into a
sink (each of its three calls) and into the proxy's own response path, over real sockets. Each
time: the client gets the upstream's bytes unchanged (or the proxy's own OpenAI-shaped error,
when the fault came before any response head), never a second status line; every sink that
did not fail gets exactly one record; the fault is logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import structlog
from aiohttp import web
from chat_streams import healthy
from structlog.testing import capture_logs
from test_upstream_faults import closed_port
from yarl import URL

from sse_audit_proxy.core.audit import End, Outcome, StreamAudit
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.sse import SSEDecoder
from sse_audit_proxy.server import proxy as proxy_module
from sse_audit_proxy.server import recording
from sse_audit_proxy.server.proxy import Proxy, _Relay
from sse_audit_proxy.sinks.metrics import Metrics

CHAT = "/v1/chat/completions"
STREAM = {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
NOT_STREAM = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
FRAMES = healthy(6)
SSE_BODY = b"".join(FRAMES)
JSON_BODY = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    }
)
# What a failing decoder or dialect might quote from a frame: it must reach no log line.
QUOTED = "COMPLETION-TEXT-quoted-in-an-exception"
LOG_EVENTS = ("stream_end", "request_end")


class Injected(Exception):
    pass


# Where a fault goes: (owner, method, is part of the audit). The failing sink is Metrics, the
# first in the list, so every later sink (the log, the recent-streams buffer, the canary guard,
# the test's RecordingSink) shows whether it still got its call.
POINTS: dict[str, tuple[type, str, bool]] = {
    "decoder.feed": (SSEDecoder, "feed", True),
    "decoder.close": (SSEDecoder, "close", True),
    "dialect.summary": (ChatCompletions, "summary", True),
    "audit.finish": (StreamAudit, "finish", True),
    "audit.start": (StreamAudit, "__init__", True),
    "sink.stream_started": (Metrics, "stream_started", False),
    "sink.stream_ended": (Metrics, "stream_ended", False),
    "sink.record": (Metrics, "record", False),
}
# Responses: an event stream; JSON answering a stream request (audited: the body is peeked
# at); JSON answering a plain request (not audited); and the proxy's own 502 (no upstream).
REACHES = {
    "decoder.feed": ("sse",),
    "decoder.close": ("sse", "json_for_stream", "refused"),
    "dialect.summary": ("sse", "json_for_stream", "refused"),
    "audit.finish": ("sse", "json_for_stream", "refused"),
    "audit.start": ("sse", "json_for_stream"),  # the proxy's 502 builds its audit unguarded
    "sink.stream_started": ("sse",),
    "sink.stream_ended": ("sse",),
    "sink.record": ("sse", "json_for_stream", "json", "refused"),
}
CASES = [(point, kind) for point, kinds in REACHES.items() for kind in kinds]


def inject(monkeypatch: pytest.MonkeyPatch, point: str) -> list[int]:
    """Make `point` raise; returns its call log. The decoder fails on its second read, so the
    stream is already being audited (and relayed) when its audit breaks."""
    owner, name, in_audit = POINTS[point]
    real = getattr(owner, name)
    calls: list[int] = []

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if point == "decoder.feed" and len(calls) == 1:
            return real(self, *args, **kwargs)
        raise Injected(QUOTED if in_audit else "injected sink failure")

    monkeypatch.setattr(owner, name, failing)
    return calls


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """The structlog events of the test. Fresh loggers for the proxy's modules: one cached by
    an earlier test's configuration would write past the capture."""
    for module in (proxy_module, recording):
        monkeypatch.setattr(module, "_log", structlog.get_logger("sse_audit_proxy"))
    with capture_logs() as captured:
        yield captured


@dataclass
class Setup:
    p: Any  # the running proxy (conftest.RunningProxy)
    logs: list[dict[str, Any]]
    streams: list[str]  # what the test's own sink (the last one) was told: started, ended


@pytest.fixture
def setup(upstream: Any, proxy: Any, monkeypatch: pytest.MonkeyPatch, logs: Any) -> Any:
    """`await setup(kind)`: the proxy in front of that kind of upstream, watched."""

    async def start(kind: str) -> Setup:
        if kind == "refused":
            p = await proxy(URL(f"http://127.0.0.1:{closed_port()}"))
        else:
            p = await proxy(await upstream(serve_sse if kind == "sse" else serve_json))
        told: list[str] = []
        sink = type(p.sink)
        monkeypatch.setattr(sink, "stream_started", lambda self, rec: told.append("started"))
        monkeypatch.setattr(sink, "stream_ended", lambda self, rec: told.append("ended"))
        return Setup(p, logs, told)

    return start


async def serve_sse(request: web.Request) -> web.StreamResponse:
    await request.read()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for data in FRAMES:  # one write each, apart: the audit sees several reads
        await resp.write(data)
        await asyncio.sleep(0.02)
    return resp


async def serve_json(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=JSON_BODY, content_type="application/json")


@dataclass
class Wire:
    """One response as read from the socket until the proxy closed it."""

    raw: bytes
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    whole: bool  # its framing ended exactly (final chunk, or Content-Length reached)


def parse(raw: bytes) -> Wire:
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding") == b"chunked":
        body, whole = dechunk(rest)
    else:
        length = int(headers[b"content-length"])
        body, whole = rest[:length], len(rest) == length
    return Wire(raw, status, headers, body, whole)


def dechunk(data: bytes) -> tuple[bytes, bool]:
    body = bytearray()
    pos = 0
    while (eol := data.find(b"\r\n", pos)) >= 0:
        size = int(data[pos:eol], 16)
        start = eol + 2
        if size == 0:
            return bytes(body), data[start:] == b"\r\n"
        body += data[start : start + size]
        if len(data) < start + size + 2:
            break  # cut inside a chunk
        assert data[start + size : start + size + 2] == b"\r\n"
        pos = start + size + 2
    return bytes(body), False


async def exchange(p: Any, doc: dict[str, Any]) -> Wire:
    """POST `doc` on a raw socket and read everything until the proxy closes the connection."""
    body = orjson.dumps(doc)
    reader, writer = await asyncio.open_connection("127.0.0.1", p.service.proxy.port)
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (CHAT.encode(), len(body), body)
    )
    parts = []
    try:
        async with asyncio.timeout(10):
            while data := await reader.read(1 << 16):
                parts.append(data)
    except ConnectionResetError:
        pass  # a cut may arrive as a reset; what came before it is what the client got
    finally:
        writer.close()
    raw = b"".join(parts)
    # Exactly one status line on the wire: the proxy never answers on top of a started response.
    assert raw.startswith(b"HTTP/1.1 ") and raw.count(b"HTTP/1.1 ") == 1, raw[:300]
    return parse(raw)


async def settled(p: Any) -> None:
    """Every handler has returned: a second record, were there one, would be out by now."""
    for _ in range(500):
        if p.service.proxy.in_flight == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the proxy's handlers never finished")


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == name]


def assert_one_record_everywhere(p: Any, logs: list[dict[str, Any]], failing_sink: str | None) -> Any:
    (rec,) = p.sink.records  # the RecordingSink, last in the list
    assert len(p.service.recent) == 1
    assert len([e for e in logs if e["event"] in LOG_EVENTS]) == 1
    counted = p.metric(
        "sse_audit_requests_total", route="chat_completions", method="POST", status=str(rec.status)
    )
    assert counted == (None if failing_sink == "record" else 1)
    return rec


@pytest.mark.parametrize(("point", "kind"), CASES, ids=[f"{pt}-{k}" for pt, k in CASES])
async def test_a_failing_audit_or_sink_costs_neither_the_response_nor_the_one_record(
    point: str,
    kind: str,
    setup: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watched = await setup(kind)
    p, logs, stream_calls = watched.p, watched.logs, watched.streams
    calls = inject(monkeypatch, point)
    wire = await exchange(p, NOT_STREAM if kind == "json" else STREAM)
    await settled(p)
    assert calls, f"{point} was never reached: the test would prove nothing"
    if point == "decoder.feed":
        assert len(calls) == 2  # failed mid-stream, then switched off for the rest of it

    trace_id = wire.headers[b"x-client-request-id"].decode()
    if kind == "refused":  # the proxy's own answer: it came before any head was sent
        assert wire.status == 502 and wire.whole
        error = orjson.loads(wire.body)["error"]
        assert (error["type"], error["code"]) == ("upstream_error", "upstream_unreachable")
        assert set(error) == {"message", "type", "code"}
    else:  # the upstream's bytes, all of them, unchanged, and a clean end
        assert wire.status == 200 and wire.whole
        assert wire.body == (SSE_BODY if kind == "sse" else JSON_BODY)

    in_audit = POINTS[point][2]
    rec = assert_one_record_everywhere(p, logs, None if in_audit else point.removeprefix("sink."))
    assert rec.trace_id == trace_id and rec.route == "chat_completions" and rec.duration > 0
    assert rec.status == wire.status and rec.bytes == len(wire.body)
    # The stream was opened and closed exactly once for every sink, whichever call failed: an
    # event stream, and any answer audited as one (a JSON answer to a stream request).
    audited = kind == "sse" or (kind == "json_for_stream" and point != "audit.start")
    assert stream_calls == (["started", "ended"] if audited else [])
    # Each sink is told both, even the one that failed to take the first: so Metrics, whose
    # injected stream_started never counted the stream up, still counts it down.
    active = {"sink.stream_started": -1, "sink.stream_ended": 1}.get(point, 0)
    assert (p.metric("sse_audit_active_streams", route="chat_completions") or 0) == active

    failed = events(logs, "proxy_failed")
    if in_audit:  # no verdict, one line saying why; the record has what is known
        assert rec.stream is None
        assert rec.error == ("upstream_unreachable" if kind == "refused" else None)
        (line,) = failed
        assert line["trace_id"] == trace_id and line["exception"] == "Injected"
        during = {"decoder.feed": "feed", "audit.start": "start"}.get(point, "finish")
        assert line["during"] == during
        assert "exc_info" not in line and QUOTED not in repr(line)  # nothing the stream said
        assert not events(logs, "sink_failed")
    else:  # the failing sink is logged, once per failed call; every other sink got the record
        assert not failed
        (line,) = events(logs, "sink_failed")
        assert (line["sink"], line["call"], line["trace_id"]) == ("Metrics", point[5:], trace_id)
        assert (rec.stream is not None) == (kind != "json")
        if kind == "sse":
            assert rec.stream is not None and rec.stream.outcome is Outcome.COMPLETE


@pytest.mark.parametrize("kind", ["sse", "json"])
async def test_a_proxy_fault_before_the_head_is_answered_with_its_own_error_and_recorded_once(
    kind: str,
    setup: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watched = await setup(kind)
    p, logs, stream_calls = watched.p, watched.logs, watched.streams
    calls = []

    def failing(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        raise Injected(f"the response head could not be built: {QUOTED}")

    monkeypatch.setattr(Proxy, "_response_head", failing)
    wire = await exchange(p, STREAM if kind == "sse" else NOT_STREAM)
    await settled(p)
    assert calls
    assert wire.status == 500 and wire.whole
    error = orjson.loads(wire.body)["error"]
    assert (error["type"], error["code"]) == ("server_error", "proxy_error")
    rec = assert_one_record_everywhere(p, logs, None)
    assert (rec.status, rec.error, rec.trace_id) == (
        500,
        "proxy_error",
        wire.headers[b"x-client-request-id"].decode(),
    )
    (line,) = events(logs, "proxy_failed")
    assert (line["trace_id"], line["exception"]) == (rec.trace_id, "Injected")
    # Where, never what: the message (which quoted a request) and a formatted traceback stay out.
    assert line["at"].endswith(" failing") and line["stack"][-1] == line["at"]
    assert "exc_info" not in line and "exception_text" not in line and QUOTED not in repr(line)
    assert stream_calls == []  # the head is built before a stream is opened


@pytest.mark.parametrize("kind", ["sse", "json"])
async def test_a_proxy_fault_after_the_head_cuts_the_connection_and_is_recorded_once(
    kind: str,
    setup: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    watched = await setup(kind)
    p, logs, stream_calls = watched.p, watched.logs, watched.streams
    real_run: Callable[[_Relay], Any] = _Relay.run
    calls = []

    async def failing(self: _Relay) -> End:
        calls.append(1)
        if kind == "sse":  # mid-body: once the first bytes have reached the client
            relaying = asyncio.ensure_future(real_run(self))
            for _ in range(500):
                if self.rec.bytes:
                    break
                await asyncio.sleep(0.01)
            relaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relaying
        raise Injected("the relay failed")

    monkeypatch.setattr(_Relay, "run", failing)
    wire = await exchange(p, STREAM if kind == "sse" else NOT_STREAM)
    await settled(p)
    assert calls
    # The head went out: the client gets a cut (never a second status line, nor a clean end).
    assert wire.status == 200 and not wire.whole
    expected = SSE_BODY if kind == "sse" else JSON_BODY
    assert expected.startswith(wire.body) and len(wire.body) < len(expected)
    if kind == "sse":
        assert wire.body  # it was cut mid-body
    rec = assert_one_record_everywhere(p, logs, None)
    assert (rec.status, rec.error, rec.bytes) == (200, "proxy_error", len(wire.body))
    if kind == "sse":
        assert rec.stream is not None and rec.stream.end is End.ABORTED
    assert [line["trace_id"] for line in events(logs, "proxy_failed")] == [rec.trace_id]
    assert stream_calls == (["started", "ended"] if kind == "sse" else [])
