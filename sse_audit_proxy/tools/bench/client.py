"""The load generator: a lean HTTP/1.1 streaming client, run in its own processes.

Each stream is one asyncio Protocol on its own connection: it writes the request when the
connection is made and decodes the chunked body in `data_received`, with `bytes.find` and
slicing only (no per-line loop, no JSON parsing). It counts frames (`\\n\\n`) and, when the
gateway stamps frames with `"sent_at"`, records each frame's one-way latency: the wall-clock
arrival time of the frame's last byte minus its stamp (both processes share the clock).

A client process takes batches over a pipe and answers with a `BatchResult`, so the harness
can start several and keep them busy across runs without paying interpreter start-up each time.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import cast

import orjson

from sse_audit_proxy.tools.bench.procs import raise_open_files_limit

MAX_HEAD = 64 << 10
MAX_CARRY = 1 << 20  # an unterminated frame longer than this is not ours: stop measuring it
_STAMP = b'"sent_at":'
_BODY = orjson.dumps(
    {
        "model": "bench",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Benchmark stream, please."}],
    }
)


@dataclass(slots=True, frozen=True)
class Batch:
    """Streams one client process opens, and how the gateway is to pace them."""

    host: str
    port: int
    path: str  # e.g. /v1/chat/completions (with any base path of the target)
    streams: int
    frames: int  # text tokens per stream (X-Demo-Frames)
    interval_ms: float
    ttft_ms: float
    stamps: bool  # ask for "sent_at" stamps and measure one-way latency
    start_at: float  # wall clock: the first stream starts then
    open_over: float  # seconds over which this batch's stream starts are spread
    offset: float = 0.0  # this process's first start, after start_at (interleaves processes)
    timeout: float = 60.0  # seconds after start_at when unfinished streams are cut


@dataclass(slots=True)
class BatchResult:
    streams_ok: int = 0
    streams_failed: int = 0
    frames: int = 0
    chunks: int = 0  # HTTP chunks: through a proxy, one per upstream read it forwarded
    bytes: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, one per stamped frame
    ttfts: list[float] = field(default_factory=list)  # request written -> first body byte
    first_start: float = 0.0  # wall clock
    last_end: float = 0.0  # wall clock
    spans: list[tuple[float, float]] = field(default_factory=list)  # (first body byte, end)
    errors: Counter[str] = field(default_factory=Counter)
    cpu: float = 0.0  # this client process's CPU seconds for the batch


def request_bytes(batch: Batch) -> bytes:
    head = (
        f"POST {batch.path} HTTP/1.1\r\n"
        f"Host: {batch.host}:{batch.port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: text/event-stream\r\n"
        f"Content-Length: {len(_BODY)}\r\n"
        f"X-Demo-Frames: {batch.frames}\r\n"
        f"X-Demo-Interval-Ms: {batch.interval_ms:g}\r\n"
        f"X-Demo-TTFT-Ms: {batch.ttft_ms:g}\r\n"
        "X-Demo-Jitter: 0\r\n" + ("X-Demo-Sent-At: 1\r\n" if batch.stamps else "") + "\r\n"
    )
    return head.encode() + _BODY


class StreamClient(asyncio.Protocol):
    """One streamed request on its own connection."""

    __slots__ = (
        "_carry",
        "_chunked",
        "_crlf",
        "_head",
        "_need",
        "_pending",
        "_result",
        "_sent",
        "_stamps",
        "_transport",
        "chunks",
        "done",
        "error",
        "first_body",
        "frames",
        "nbytes",
        "request",
        "ttft",
    )

    def __init__(self, request: bytes, stamps: bool, result: BatchResult) -> None:
        self.request = request
        self._stamps = stamps
        self._result = result
        self._transport: asyncio.Transport | None = None
        self._head: bytes | None = b""  # until the response head is complete; then None
        self._chunked = True
        self._pending = b""  # an incomplete chunk-size line
        self._need = 0  # chunk bytes still to come
        self._crlf = 0  # bytes of the CRLF after a chunk still to skip
        self._carry = b""  # the unterminated end of the event stream
        self._sent = 0.0
        self.first_body = 0.0
        self.ttft: float | None = None
        self.frames = 0
        self.chunks = 0
        self.nbytes = 0
        self.error: str | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._sent = time.perf_counter()
        self._transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self._head is not None:
            data = self._read_head(data)
            if not data:
                return
        self.nbytes += len(data)
        if self._chunked:
            self._dechunk(data, now)
        else:
            self._payload(data, now)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if self._head is None and not self._chunked:
                self._finish(None)  # a close-delimited body ends here
            else:
                self._finish("connection_lost" if exc is None else type(exc).__name__)

    # Decoding --------------------------------------------------------------------------

    def _read_head(self, data: bytes) -> bytes:
        assert self._head is not None
        buf = self._head + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._fail("head_too_large")
            self._head = buf
            return b""
        head = buf[:end].lower()
        self._head = None
        status = head[9:12]
        if status != b"200":
            self._fail(f"status_{status.decode(errors='replace')}")
            return b""
        self._chunked = b"transfer-encoding: chunked" in head
        return buf[end + 4 :]

    def _dechunk(self, data: bytes, now: float) -> None:
        buf = self._pending + data if self._pending else data
        self._pending = b""
        pos, n = 0, len(buf)
        while pos < n:
            if self._need:
                take = min(self._need, n - pos)
                self._payload(buf[pos : pos + take], now)
                pos += take
                self._need -= take
                if not self._need:
                    self._crlf = 2
            elif self._crlf:
                skip = min(self._crlf, n - pos)
                pos += skip
                self._crlf -= skip
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    self._pending = buf[pos:]
                    return
                try:
                    size = int(buf[pos:eol].split(b";", 1)[0], 16)
                except ValueError:
                    self._fail("bad_chunk")
                    return
                pos = eol + 2
                if size == 0:
                    self._finish(None)  # trailers, if any, are not read
                    return
                self.chunks += 1
                self._need = size

    def _payload(self, piece: bytes, now: float) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self._sent
            self.first_body = now
        text = self._carry + piece if self._carry else piece
        end = text.rfind(b"\n\n")
        if end < 0:
            self._carry = text if len(text) < MAX_CARRY else b""
            return
        complete = text[: end + 2]
        self._carry = text[end + 2 :]
        self.frames += complete.count(b"\n\n")
        if self._stamps:
            latencies = self._result.latencies
            at = complete.find(_STAMP)
            while at >= 0:
                close = complete.find(b"}", at)
                try:
                    latencies.append(now - float(complete[at + len(_STAMP) : close]))
                except ValueError:  # not the gateway's stamp (a proxy under test mangled it)
                    self._result.errors["bad_stamp"] += 1
                if close < 0:
                    break
                at = complete.find(_STAMP, close)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _fail(self, reason: str) -> None:
        self._finish(reason)
        if self._transport is not None:
            self._transport.abort()

    def _finish(self, error: str | None) -> None:
        if not self.done.done():
            self.error = error
            self.done.set_result(None)
            if error is None and self._transport is not None:
                self._transport.close()


async def _one(batch: Batch, request: bytes, at: float, result: BatchResult) -> None:
    loop = asyncio.get_running_loop()
    delay = at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    started = time.time()
    client: StreamClient | None = None
    try:
        _, client = await loop.create_connection(
            lambda: StreamClient(request, batch.stamps, result), batch.host, batch.port
        )
        await client.done
    except OSError as exc:
        result.errors[type(exc).__name__] += 1
        result.streams_failed += 1
        return
    finally:
        if client is not None:
            client.close()
    end = time.time()
    result.first_start = min(result.first_start or started, started)
    result.last_end = max(result.last_end, end)
    result.frames += client.frames
    result.chunks += client.chunks
    result.bytes += client.nbytes
    if client.error is not None:
        result.errors[client.error] += 1
        result.streams_failed += 1
        return
    result.streams_ok += 1
    if client.ttft is not None:
        result.ttfts.append(client.ttft)
        result.spans.append((client.first_body, end))


async def run_batch(batch: Batch) -> BatchResult:
    result = BatchResult()
    request = request_bytes(batch)
    step = batch.open_over / batch.streams if batch.streams else 0.0
    first = batch.start_at + batch.offset
    tasks = [
        asyncio.create_task(_one(batch, request, first + i * step, result)) for i in range(batch.streams)
    ]
    cpu = _cpu()
    deadline = batch.start_at + batch.timeout - time.time()
    _, late = await asyncio.wait(tasks, timeout=max(deadline, 0.1))
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late, timeout=5.0)
        result.errors["timeout"] += len(late)
        result.streams_failed += len(late)
    result.cpu = _cpu() - cpu
    return result


async def run_batches(batches: tuple[Batch, ...]) -> list[BatchResult]:
    """Several targets' batches at once (`bench --at-once`), a result for each; the process's
    CPU over them all is shared out evenly (each batch's own would count the others' too)."""
    cpu = _cpu()
    results = list(await asyncio.gather(*(run_batch(b) for b in batches)))
    share = (_cpu() - cpu) / max(len(results), 1)
    for result in results:
        result.cpu = share
    return results


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client_main(conn: Connection, cpus: frozenset[int] | None) -> None:
    """A client process: run each Batch received on `conn`, answer with its result (a tuple of
    batches: run at once, a list of results); None stops."""
    from sse_audit_proxy.server import loop

    if cpus:
        os.sched_setaffinity(0, cpus)
    raise_open_files_limit()
    while True:
        try:
            batch = conn.recv()
        except EOFError:
            return
        if batch is None:
            return
        work = run_batches(batch) if isinstance(batch, tuple) else run_batch(batch)
        conn.send(loop.run(work))
