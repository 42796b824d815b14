"""Small hostile peers for the tests in this folder: raw-socket clients and the real `serve`.

Everything binds or connects to 127.0.0.1 only; every loop is bounded in count and time.
(No conftest.py here on purpose: a second `conftest` module would shadow tests/conftest.py
for the tests that `from conftest import ...`. The `hostile` marker is added to every test
in this folder by tests/conftest.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from yarl import URL


@dataclass
class Child:
    """`sse-audit-proxy serve` in a child process, its stdout and stderr collected."""

    proc: asyncio.subprocess.Process
    url: URL
    metrics_url: URL
    lines: list[dict[str, Any]] = field(default_factory=list)
    stderr: bytearray = field(default_factory=bytearray)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]


def nofile_limit(limit: int) -> Callable[[], None]:
    """A preexec_fn: the child may hold at most `limit` descriptors (soft and hard)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


@contextlib.asynccontextmanager
async def serve(
    upstream: URL, *args: str, nofile: int | None = None, env: dict[str, str] | None = None
) -> AsyncIterator[Child]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SSE_AUDIT_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sse_audit_proxy",
        "serve",
        "--upstream",
        str(upstream),
        "--port",
        "0",
        "--metrics-port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**base, **(env or {}), "PYTHONUNBUFFERED": "1"},
        preexec_fn=None if nofile is None else nofile_limit(nofile),
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[dict[str, Any]] = []
    err = bytearray()
    started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def read_out() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                line = json.loads(raw)
                lines.append(line)
                if line.get("event") == "proxy_started" and not started.done():
                    started.set_result(line)
        if not started.done():
            started.set_exception(RuntimeError(f"serve exited {await proc.wait()}: {err!r}"))

    async def read_err() -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(65536):
            err.extend(chunk)

    readers = [asyncio.create_task(read_out()), asyncio.create_task(read_err())]
    try:
        first = await asyncio.wait_for(started, 30)
        yield Child(proc, URL(first["listen"]), URL(first["metrics"]).with_path("/"), lines, err)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in readers:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 5)


async def read_response_head(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Bytes up to and including the first blank line (one response head, 1xx included)."""
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)


async def read_to_close(
    reader: asyncio.StreamReader, timeout: float, until: bytes | None = None
) -> tuple[bytes, bool]:
    """(bytes, closed): read until the peer closes, `timeout` passes, or what was read ends
    with `until` (an answer whose end is known: no wait for a keep-alive connection's close)."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            return bytes(out), False
        except ConnectionError:
            return bytes(out), True
        if not chunk:
            return bytes(out), True
        out.extend(chunk)
        if until is not None and out.endswith(until):
            return bytes(out), False
    return bytes(out), False


def metric_value(exposition: str, name: str, **labels: str) -> float | None:
    """One sample from a Prometheus text exposition."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in exposition.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric == name and ",".join(sorted(rest.rstrip("}").split(","))) == want:
            return float(value)
    return None


def raise_own_nofile(at_least: int) -> bool:
    """Let this test process hold `at_least` descriptors; False if the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= at_least:
        return True
    if hard != resource.RLIM_INFINITY and hard < at_least:
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (at_least, hard))
    return True
