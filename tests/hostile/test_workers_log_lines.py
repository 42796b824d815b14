"""`serve --workers N` behind a log reader that falls behind (a log shipper under load).

The workers write their lines to the one stdout they share. A pipe keeps a write whole only up
to 4 KiB (PIPE_BUF); once it was full, a longer line (the `stream_evidence` of a cut stream)
went out in pieces with another worker's lines between them: an outside review saw 2 to 6
broken lines and a lost `stream_end` in 300 cut streams. Each line is now written whole under a
lock the processes share.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from typing import Any

import aiohttp

from tests.cli_process import serve_env
from tests.hostile.relay_support import RawRequest, raw_upstream

STREAMS = 250
# Fields the record's evidence shows (of a kind whose values it shows: request IDs), so each
# evidence line is past 4 KiB.
PADDING = b"".join(b"X-Pad-%d-Request-Id: %s\r\n" % (i, b"v" * 100) for i in range(60))
FRAMES = b"".join(
    b'data: {"choices":[{"index":0,"delta":{"content":"tok %d"},"finish_reason":null}]}\n\n' % i
    for i in range(40)
)


async def cut_stream(req: RawRequest, writer: asyncio.StreamWriter) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    writer.write(head + PADDING + b"\r\n" + b"%x\r\n%s\r\n" % (len(FRAMES), FRAMES))
    await writer.drain()
    writer.close()  # no last chunk: truncated, and the record's evidence line follows


async def test_every_line_of_every_worker_is_whole_when_the_log_reader_falls_behind() -> None:
    env = serve_env()
    async with raw_upstream(cut_stream) as up:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sse_audit_proxy",
            "serve",
            "--upstream",
            f"http://127.0.0.1:{up.port}",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--workers",
            "4",
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        try:
            head = b""
            async with asyncio.timeout(30):
                while b'"proxy_started"' not in head:
                    head += await proc.stdout.readline()
            port = int(json.loads(head.splitlines()[-1])["listen"].rsplit(":", 1)[1])
            # stdout is not read from here on: the pipe fills and each worker's writer blocks.
            gate = asyncio.Semaphore(24)
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:

                async def one(i: int) -> None:
                    async with gate:
                        try:
                            async with http.post(
                                f"http://127.0.0.1:{port}/v1/chat/completions",
                                data=b'{"model": "m", "stream": true}',
                                headers={"X-Client-Request-Id": f"cut-{i}"},
                            ) as resp:
                                await resp.read()
                        except aiohttp.ClientPayloadError:
                            pass  # the cut, as the client sees it

                async with asyncio.timeout(60):
                    await asyncio.gather(*(one(i) for i in range(STREAMS)))
            await asyncio.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                rest = await proc.stdout.read()
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    lines = [line for line in (head + rest).split(b"\n") if line.strip()]
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]  # each line whole
    assert max(map(len, lines)) > 4096  # the case: lines longer than a pipe keeps whole
    ends = sorted(r["trace_id"] for r in records if r.get("event") == "stream_end")
    assert ends == sorted(f"cut-{i}" for i in range(STREAMS))
    assert proc.returncode == 0
