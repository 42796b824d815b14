"""The demo gateway's HTTP side: an OpenAI-compatible aiohttp app that plays the scenarios."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy
from yarl import URL

from sse_audit_proxy.tools import scenarios
from sse_audit_proxy.tools.gateway.plan import (
    BadRequest,
    Plan,
    Prompt,
    chat_prompt,
    completions_prompt,
    plan,
    responses_prompt,
)
from sse_audit_proxy.tools.gateway.script import (
    BURSTY_MIN_FRAMES,
    EndAction,
    Script,
    Timing,
    compose,
    cut_point,
)
from sse_audit_proxy.tools.gateway.shapes import (
    Frames,
    Shape,
    chat_body,
    chat_stream,
    completions_body,
    completions_stream,
    error_body,
    new_id,
    responses_body,
    responses_stream,
)
from sse_audit_proxy.tools.scenarios import SCENARIO_HEADER, Scenario

HANG_LIMIT = 600.0  # a hung stream gives up after this long even if nobody does
MAX_FRAMES = 100_000
OWNER = "sse-audit-proxy-demo"

_TIMING_KEY = web.AppKey("timing", Timing)
# `gateway --scenario`: every request plays this one, whatever its model, unless it names
# another with X-Demo-Scenario (say, a canary that buffers).
_FORCED_KEY = web.AppKey("forced_scenario", str)

# Real servers' wire habits, on any scenario and route with `X-Demo-Habits: a,b`; the
# scenarios of the same names are the healthy stream with one habit.
HABITS_HEADER = "X-Demo-Habits"
HABITS = ("late-terminator", "text-plain", "bursty", "error-no-done")
_SCENARIO_HABITS = {
    "late-terminator": "late-terminator",
    "wrong-content-type": "text-plain",
    "bursty": "bursty",
    "error-no-done": "error-no-done",
}

# The scenarios that change which frames are sent (the others change only when).
_SHAPES: dict[str, Callable[[int], Shape]] = {
    "no-usage": lambda n: Shape(usage=False),
    "no-done": lambda n: Shape(done=False),
    "no-finish": lambda n: Shape(finish=False),
    "usage-mismatch": lambda n: Shape(usage_extra=3),
    "error-midstream": lambda n: Shape(error_at=cut_point(n)),
    "malformed": lambda n: Shape(malformed_at=cut_point(n)),
}


def _shape(scenario: str, content_frames: int, habits: frozenset[str]) -> Shape:
    make = _SHAPES.get(scenario)
    shape = Shape() if make is None else make(content_frames)
    if "error-no-done" in habits:
        shape = replace(shape, error_at=cut_point(content_frames), done=False, rate_limited=True)
    return shape


class _Refused(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str) -> None:
        super().__init__(message)
        self.response = _error(status, message, type_, code)


def _error(
    status: int, message: str, type_: str, code: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=error_body(message, type_, code), content_type="application/json", headers=headers
    )


def _bad(message: str, code: str = "invalid_request") -> _Refused:
    return _Refused(400, message, "invalid_request_error", code)


# Per-request knobs -------------------------------------------------------------------------


def _number(headers: CIMultiDictProxy[str], name: str, scale: float, lo: float, hi: float) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _bad(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise _bad(f"{name} must be between {lo:g} and {hi:g}, got {raw!r}")
    return value * scale


def timing_for(headers: CIMultiDictProxy[str], default: Timing) -> Timing:
    """The gateway's timing with this request's X-Demo-* header overrides applied."""
    frames = _number(headers, "X-Demo-Frames", 1, 1, MAX_FRAMES)
    interval = _number(headers, "X-Demo-Interval-Ms", 0.001, 0, 60_000)
    ttft = _number(headers, "X-Demo-TTFT-Ms", 0.001, 0, 600_000)
    jitter = _number(headers, "X-Demo-Jitter", 1, 0, 1)
    fault = _number(headers, "X-Demo-Fault-Ms", 0.001, 0, 600_000)
    sent_at = headers.get("X-Demo-Sent-At")
    terminator = _number(headers, "X-Demo-Terminator-Ms", 0.001, 0, 600_000)
    return Timing(
        ttft=default.ttft if ttft is None else ttft,
        interval=default.interval if interval is None else interval,
        jitter=default.jitter if jitter is None else jitter,
        fault_delay=default.fault_delay if fault is None else fault,
        frames=default.frames if frames is None else int(frames),
        sent_at=default.sent_at if sent_at is None else sent_at.strip().lower() in ("1", "true", "yes", "on"),
        terminator_delay=default.terminator_delay if terminator is None else terminator,
    )


def habits_for(headers: CIMultiDictProxy[str], scenario: Scenario) -> frozenset[str]:
    """The habits this request asks for in X-Demo-Habits, plus its scenario's own."""
    named = {h.strip().lower() for h in headers.get(HABITS_HEADER, "").split(",") if h.strip()}
    unknown = sorted(named.difference(HABITS))
    if unknown:
        raise _bad(
            f"unknown {HABITS_HEADER} {', '.join(unknown)}; known: {', '.join(HABITS)}", "unknown_habit"
        )
    own = _SCENARIO_HABITS.get(scenario.name)
    return frozenset(named | {own} if own else named)


def scenario_for(model: str, headers: CIMultiDictProxy[str]) -> Scenario:
    named = headers.get(SCENARIO_HEADER)
    if named is not None:
        found = scenarios.lookup(named)
        if found is None:
            raise _bad(
                f"unknown {SCENARIO_HEADER} {named!r}; GET /v1/models lists the scenarios", "unknown_scenario"
            )
        return found
    if model.startswith(scenarios.MODEL_PREFIX):
        found = scenarios.for_model(model)
        if found is None:
            raise _Refused(
                404,
                f"The model `{model}` does not exist; GET /v1/models lists the demo scenarios",
                "invalid_request_error",
                "model_not_found",
            )
        return found
    return scenarios.HEALTHY  # any other model name: a healthy answer


# Writing a stream --------------------------------------------------------------------------


def _stamp(data: bytes) -> bytes:
    """Put the send time in every JSON frame of a write, for one-way latency. A raw newline
    cannot occur inside JSON, so `}` followed by the blank line is always a frame's end."""
    mark = b',"sent_at":%.6f}' % time.time()
    return data.replace(b"}\n\n", mark + b"\n\n").replace(b"}\r\n\r\n", mark + b"\r\n\r\n")


def _reset(request: web.Request) -> None:
    """A real TCP RST: linger 0, then close."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _flushed(request: web.Request, limit: float = 1.0) -> None:
    """Wait (bounded) until the transport has handed every byte to the kernel."""
    transport = request.transport
    deadline = time.monotonic() + limit
    while (
        transport is not None
        and not transport.is_closing()
        and transport.get_write_buffer_size()
        and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.001)


async def _play(
    request: web.Request, resp: web.StreamResponse, script: Script, started: float, sent_at: bool
) -> None:
    loop = asyncio.get_running_loop()
    write = resp.write
    last_at, last_done = 0.0, started
    for at, data in script.writes:
        # A scenario is its gaps: a write that a busy loop made late does not shorten the next
        # gap (a bursty clump's silence, a stall), as catching up on the schedule would.
        delay = max(started + at, last_done + at - last_at) - loop.time()
        # Yield even when the write is already due: concurrent streams then take turns frame
        # by frame, as a model server's do, instead of one stream's whole burst going first
        # (a write only yields when the socket is full).
        await asyncio.sleep(delay if delay > 0 else 0)
        last_at, last_done = at, loop.time()
        if data:
            await write(_stamp(data) if sent_at else data)
    if script.end is EndAction.RESET:
        await _flushed(request)
        _reset(request)
    elif script.end is EndAction.HANG:
        await asyncio.sleep(HANG_LIMIT)
        await resp.write_eof()
    else:
        await resp.write_eof()


def _headers(scenario: Scenario) -> dict[str, str]:
    return {"x-request-id": new_id("req_"), SCENARIO_HEADER: scenario.name}


# Handlers ----------------------------------------------------------------------------------

Stream = Callable[[Plan, str, dict[str, Any], bool, Shape], Frames]
Body = Callable[[Plan, str, dict[str, Any]], dict[str, Any]]


def _route(
    read: Callable[[dict[str, Any]], Prompt], body_of: Body, stream_of: Stream
) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        started = asyncio.get_running_loop().time()
        try:
            return await _answer(request, started, read, body_of, stream_of)
        except _Refused as refused:
            return refused.response

    return handle


async def _read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise _bad("the request body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", "invalid_json")
    return body


async def _answer(
    request: web.Request,
    started: float,
    read: Callable[[dict[str, Any]], Prompt],
    body_of: Body,
    stream_of: Stream,
) -> web.StreamResponse:
    body = await _read_json(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("you must provide a model parameter", "missing_model")
    forced = request.app.get(_FORCED_KEY)
    if forced and SCENARIO_HEADER not in request.headers:
        scenario = scenarios.BY_NAME[forced]
    else:
        scenario = scenario_for(model, request.headers)
    timing = timing_for(request.headers, request.app[_TIMING_KEY])
    habits = habits_for(request.headers, scenario)
    if "bursty" in habits:  # enough tokens for several clumps, streamed or not (same usage)
        timing = replace(timing, frames=max(timing.frames or 0, BURSTY_MIN_FRAMES))
    try:
        prompt = read(body)
    except BadRequest as exc:
        raise _bad(str(exc)) from None
    headers = _headers(scenario)
    if scenario.name == "http-429":
        headers["Retry-After"] = "1"
        return _error(
            429,
            "Rate limit reached for the demo gateway (scenario http-429).",
            "rate_limit_error",
            "rate_limit_exceeded",
            headers,
        )
    if scenario.name == "http-500":
        return _error(
            500,
            "The demo gateway had an internal error (scenario http-500).",
            "server_error",
            "internal_error",
            headers,
        )
    answer = plan(
        prompt,
        frames=timing.frames,
        call_tool=scenario.name in ("tool-call", "bad-tool-args"),
        valid_tool_args=scenario.name != "bad-tool-args",
    )
    if body.get("stream") is not True:
        doc = body_of(answer, model, body)
        return await _whole(request, started, scenario, timing, answer, doc, headers)
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    shape = _shape(scenario.name, answer.content_frames, habits)
    frames = stream_of(answer, model, body, include_usage, shape)
    script = compose(
        frames,
        scenario.name,
        timing,
        answer.seed,
        bursty="bursty" in habits,
        late_terminator="late-terminator" in habits,
    )
    # text-plain: an event stream labelled as plain text, as some servers and proxies send it.
    headers["Content-Type"] = (
        "text/plain; charset=utf-8" if "text-plain" in habits else "text/event-stream; charset=utf-8"
    )
    headers["Cache-Control"] = "no-cache"
    resp = web.StreamResponse(headers=headers)
    if request.version < (1, 1):
        # No chunked coding in HTTP/1.0: the close is the body's end (aiohttp kept a keep-alive
        # client's connection open after [DONE], so the stream never ended: an outside review).
        resp.force_close()
    await resp.prepare(request)
    await _play(request, resp, script, started, timing.sent_at)
    return resp


async def _whole(
    request: web.Request,
    started: float,
    scenario: Scenario,
    timing: Timing,
    answer: Plan,
    doc: dict[str, Any],
    headers: dict[str, str],
) -> web.StreamResponse:
    """A non-streamed answer, after the time generating it would take. Of the faults only
    those with a non-streamed form apply: reset, hang, and the tool scenarios (in the plan)."""
    wait = timing.ttft + answer.content_frames * timing.interval
    if scenario.name in ("slow-first-token", "stall", "keepalive"):
        wait += timing.fault_delay
    delay = started + wait - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)
    if scenario.name == "reset":
        _reset(request)  # aiohttp then fails to write the answer below, quietly
    if scenario.name == "hang":
        await asyncio.sleep(HANG_LIMIT)
    return web.Response(body=orjson.dumps(doc), content_type="application/json", headers=headers)


def _chat_stream(p: Plan, model: str, body: dict[str, Any], usage: bool, shape: Shape) -> Frames:
    return chat_stream(p, model, include_usage=usage, shape=shape)


def _completions_stream(p: Plan, model: str, body: dict[str, Any], usage: bool, shape: Shape) -> Frames:
    return completions_stream(p, model, include_usage=usage, shape=shape)


def _responses_stream(p: Plan, model: str, body: dict[str, Any], usage: bool, shape: Shape) -> Frames:
    return responses_stream(p, model, body, shape=shape)


def _model(scenario: Scenario) -> dict[str, Any]:
    return {
        "id": scenario.model,
        "object": "model",
        "created": 0,
        "owned_by": OWNER,
        "description": f"{scenario.does}; the proxy reports {scenarios.verdict(scenario)}",
    }


async def _models(request: web.Request) -> web.Response:
    return web.json_response(
        {"object": "list", "data": [_model(s) for s in scenarios.SCENARIOS]},
        dumps=lambda o: orjson.dumps(o).decode(),
    )


async def _one_model(request: web.Request) -> web.Response:
    found = scenarios.for_model(request.match_info["model"])
    if found is None:
        return _error(
            404,
            f"The model `{request.match_info['model']}` does not exist",
            "invalid_request_error",
            "model_not_found",
        )
    return web.json_response(_model(found))


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _not_found(request: web.Request) -> web.Response:
    return _error(
        404,
        f"Unknown request URL: {request.method} {request.path}. The demo gateway "
        "serves POST /v1/chat/completions, /v1/responses, /v1/completions and "
        "GET /v1/models.",
        "invalid_request_error",
        "unknown_url",
    )


def create_app(timing: Timing, scenario: str | None = None) -> web.Application:
    """`scenario`: play this one for every request that does not name one in the header."""
    app = web.Application(client_max_size=32 << 20)
    app[_TIMING_KEY] = timing
    if scenario is not None:
        if scenarios.lookup(scenario) is None:
            raise ValueError(f"unknown scenario {scenario!r}")
        app[_FORCED_KEY] = scenario
    app.router.add_post(
        "/v1/chat/completions", _route(chat_prompt, lambda p, m, b: chat_body(p, m), _chat_stream)
    )
    app.router.add_post(
        "/v1/completions",
        _route(completions_prompt, lambda p, m, b: completions_body(p, m), _completions_stream),
    )
    app.router.add_post("/v1/responses", _route(responses_prompt, responses_body, _responses_stream))
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model}", _one_model)
    app.router.add_get("/healthz", _healthz)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


HEAD_LINE_LIMIT = 65536


async def start(
    timing: Timing, host: str = "127.0.0.1", port: int = 0, scenario: str | None = None
) -> tuple[web.AppRunner, URL]:
    """Serve the gateway; returns its runner (call `cleanup()` to stop) and base URL."""
    # A client that goes away cancels its handler at once, like a real gateway stopping work.
    # Heads up to 64 KiB a line (aiohttp's 8 KiB answered a plain-text 400 quoting the field):
    # the proxy's own limits in front are the ones a test of them meets.
    runner = web.AppRunner(
        create_app(timing, scenario),
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
        max_line_size=HEAD_LINE_LIMIT,
        max_field_size=HEAD_LINE_LIMIT,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    return runner, URL(f"http://{shown}:{bound}")
