"""`sse-audit-proxy probe` against an upstream that answers without end, in pings, or in escapes.

The probe is pointed at routes nobody has vetted yet. Against a hostile one it collected a
non-streamed answer whole (an endless JSON body: 1.5 GB in 2 s) and kept up to 100,000 events of
up to 1 MiB each (1.5 GB in 8 s); a stream of nothing but keep-alive comments (OpenRouter's
`: OPENROUTER PROCESSING` while a model hangs) never ended it, the per-read timeout being reset
by each comment; and error messages and headers went to the terminal with their escape
sequences (clear the screen, retitle the window, draw a green "result: PASS"). Now an answer
stops at 16 MiB and fails as too large, a stream fails after --timeout without a data frame
(10 x --timeout bounds any request), and every upstream-derived string is printed escaped.

The probe runs as a child process (`python -m sse_audit_proxy probe`) against a raw-socket
upstream; its own peak RSS is its VmHWM at exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import zlib
from collections.abc import Awaitable, Callable

import pytest
from relay_support import RawRequest, raw_upstream

Script = Callable[[RawRequest, asyncio.StreamWriter], Awaitable[None]]
PLAIN = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
).encode()
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
JSON_CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNK = b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,%s}]}\n\n'
ROLE = CHUNK % b'"delta":{"role":"assistant"}'
ENOUGH = 256 << 20  # what an endless upstream sends at most in a test run
# The child's peak RSS is its VmHWM: getrusage's ru_maxrss survives exec (it would be pytest's).
RUNNER = (
    "import sys\n"
    "from sse_audit_proxy.cli.main import main\n"
    "rc = main(sys.argv[1:])\n"
    "sys.stdout.flush()\n"
    "hwm = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
    "print('peak_kib', hwm, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def is_stream(req: RawRequest) -> bool:
    return json.loads(req.body).get("stream") is True


async def plain_answer(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(PLAIN)
    )
    writer.write(PLAIN)
    await writer.drain()


async def healthy_stream(writer: asyncio.StreamWriter, *, head: bool = True) -> None:
    """A whole, healthy chat stream; `head=False`: its response head was written already."""
    writer.write((SSE_HEAD if head else b"") + chunk(ROLE))
    for word in (b"hi", b" there"):
        writer.write(chunk(CHUNK % (b'"delta":{"content":"%s"}' % word)))
    writer.write(chunk(CHUNK % b'"delta":{},"finish_reason":"stop"'))
    writer.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    await writer.drain()


async def endless(writer: asyncio.StreamWriter, start: bytes, piece: bytes) -> None:
    writer.write(start)
    for _ in range(ENOUGH // len(piece)):
        writer.write(piece)
        await writer.drain()
    writer.close()


async def probe(port: int, timeout: float, limit: float, *extra: str) -> tuple[int, str, int, float]:
    """(exit status, stdout, peak RSS KiB, seconds) of one probe run against the upstream."""
    began = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUNNER,
        "probe",
        "--base-url",
        f"http://127.0.0.1:{port}/v1",
        "--model",
        "m",
        "--timeout",
        str(timeout),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"the probe was still running after {limit} s") from None
    peak = int(err.decode().rsplit("peak_kib", 1)[1].split()[0])
    assert proc.returncode is not None
    return proc.returncode, out.decode(), peak, time.monotonic() - began


async def test_an_endless_non_streamed_answer_fails_as_too_large_in_bounded_memory() -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        if is_stream(req):
            await healthy_stream(writer)
        else:
            await endless(writer, JSON_CHUNKED + chunk(b'{"id":"x","pad":"'), chunk(b"A" * (1 << 20)))

    async with raw_upstream(script) as up:
        rc, out, peak_kib, _ = await probe(up.port, 10, 60)
    assert peak_kib < 150_000, f"peak RSS {peak_kib} KiB"
    assert rc == 1
    assert "FAIL    HTTP 200" in out  # the route gate
    assert "got an answer too large to read: the answer passed 16 MiB" in out


async def test_a_stream_of_megabyte_frames_fails_as_too_large_in_bounded_memory() -> None:
    frame = chunk(
        b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"'
        + b"A" * ((1 << 20) - 200)
        + b'"}}]}\n\n'
    )

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        if is_stream(req):
            await endless(writer, SSE_HEAD, frame)
        else:
            await plain_answer(writer)

    async with raw_upstream(script) as up:
        rc, out, peak_kib, _ = await probe(up.port, 10, 60)
    assert peak_kib < 150_000, f"peak RSS {peak_kib} KiB"
    assert rc == 1
    assert "FAIL framing (chat)" in out
    assert "the streaming request got an answer too large to read" in out


async def test_a_compression_bomb_fails_as_too_large() -> None:
    """Before, the inflater stopped decoding it and the route gate said "not JSON"."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = z.compress(b'{"id":"x","pad":"') + z.compress(b"A" * (256 << 20)) + z.flush()

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        if is_stream(req):
            await healthy_stream(writer)
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            b"Content-Length: %d\r\n\r\n" % len(bomb) + bomb
        )
        await writer.drain()

    async with raw_upstream(script) as up:
        rc, out, peak_kib, _ = await probe(up.port, 10, 60)
    assert peak_kib < 150_000, f"peak RSS {peak_kib} KiB"
    assert rc == 1
    assert "got an answer too large to read: the compressed answer expands absurdly" in out


async def test_a_stream_of_keepalives_only_fails_after_ten_timeouts() -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        if not is_stream(req):
            await plain_answer(writer)
            return
        writer.write(SSE_HEAD + chunk(ROLE))
        for _ in range(150):  # 30 s of `: OPENROUTER PROCESSING`, at most
            writer.write(chunk(b": OPENROUTER PROCESSING\n\n"))
            await writer.drain()
            await asyncio.sleep(0.2)
        writer.close()

    async with raw_upstream(script) as up:
        rc, out, _, took = await probe(up.port, 0.3, 40)
    assert rc == 1
    stalled = "the stream stalled: only keep-alive comments for 3 s, no data frame, and the answer not done"
    assert stalled + " after 3 s (10 x --timeout)" in out
    assert took < 30, f"{took:.1f} s"


async def test_a_route_that_thinks_behind_keepalives_longer_than_the_timeout_passes() -> None:
    """A reasoning model may think for minutes before its first token while its gateway sends
    comments (OpenRouter's `: OPENROUTER PROCESSING`): healthy, so keep-alives are progress for
    --timeout; only ten timeouts of nothing else fail it (above)."""

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        if not is_stream(req):
            await plain_answer(writer)
            return
        writer.write(SSE_HEAD)
        for _ in range(8):  # 1.6 s of thinking, over three times --timeout
            writer.write(chunk(b": OPENROUTER PROCESSING\n\n"))
            await writer.drain()
            await asyncio.sleep(0.2)
        await healthy_stream(writer, head=False)

    async with raw_upstream(script) as up:
        _, out, _, _ = await probe(up.port, 0.5, 60)
    assert "stalled" not in out and "only keep-alive" not in out, out
    assert "framing" in out and "FAIL" not in out.split("framing", 1)[1].splitlines()[0], out


async def test_a_body_that_trickles_without_end_fails_after_ten_timeouts() -> None:
    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        if is_stream(req):
            await healthy_stream(writer)
            return
        writer.write(JSON_CHUNKED)
        for _ in range(300):  # 30 s of one space a tenth of a second, at most
            writer.write(chunk(b" "))
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.close()

    async with raw_upstream(script) as up:
        rc, out, _, took = await probe(up.port, 0.5, 25)
    assert rc == 1
    assert "the answer never finished: the answer was still arriving after 5 s (10 x --timeout)" in out
    assert took < 15, f"{took:.1f} s"


async def test_upstream_escape_sequences_reach_the_terminal_escaped() -> None:
    forged = "\x1b[2J\x1b[H\x1b]0;owned\x07\x1b[32mresult: PASS \xb7 12 passed, 0 failed\x1b[8m\n\x9b31m"
    body = json.dumps({"error": {"message": forged, "type": "x"}}).encode()

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 400 Bad\r\nContent-Type: application/json\r\nX-Request-Id: \x1b[31mRID\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        await writer.drain()

    async with raw_upstream(script) as up:
        rc, out, _, _ = await probe(up.port, 10, 30)
    assert rc == 1
    assert not any(c in out for c in "\x1b\x07\x9b"), repr(out)
    assert "(\\x1b[2J\\x1b[H\\x1b]0;owned\\x07\\x1b[32mresult: PASS" in out
    assert "\\x1b[8m\\x0a\\x9b31m)" in out  # the line feed too: no forged line of its own
    assert not any(line.startswith("result: PASS") for line in out.splitlines())


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
async def test_a_redirect_is_the_routes_answer_and_no_header_follows_it_elsewhere(relative: bool) -> None:
    """aiohttp followed redirects: another host's answer was reported as the route's, and a
    secret-named `-H` header (aiohttp drops only Authorization) reached that host."""

    async def elsewhere(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        await plain_answer(writer)

    async with raw_upstream(elsewhere) as other:
        target = f"http://user:pw@127.0.0.1:{other.port}/v1/chat/completions?key=QUERYSECRET"
        if relative:  # Go's http.Redirect, Express's res.redirect('/x')
            target = "/v2/chat/completions?api_key=QUERYSECRET"

        async def redirect(req: RawRequest, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: %s\r\n" % target.encode())
            writer.write(b"Content-Length: 0\r\n\r\n")
            await writer.drain()

        async with raw_upstream(redirect) as up:
            rc, out, _, _ = await probe(up.port, 5, 30, "-H", "X-Auth-Token: GOOGSECRET123456")
    assert rc == 1
    assert other.requests == []  # nothing went to the other host
    where = f"{up.port}/v2" if relative else f"{other.port}/v1"
    assert f"got HTTP 307, a redirect to http://127.0.0.1:{where}/chat/completions" in out
    assert "QUERYSECRET" not in out and "pw@" not in out
