"""`sse-audit-proxy serve` as a real child process, for tests that need the whole command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from yarl import URL


@dataclass
class ServeProcess:
    proc: asyncio.subprocess.Process
    started: dict[str, Any]
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> URL:
        return URL(self.started["listen"])

    @property
    def metrics_url(self) -> URL:
        return URL(self.started["metrics"]).with_path("/")

    async def stop(self, timeout: float = 15.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)


async def _read_lines(
    proc: asyncio.subprocess.Process, into: list[dict[str, Any]], started: asyncio.Future[dict[str, Any]]
) -> None:
    assert proc.stdout is not None
    async for raw in proc.stdout:
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        into.append(line)
        if line.get("event") == "proxy_started" and "worker" not in line and not started.done():
            started.set_result(line)
    if not started.done():
        started.set_exception(RuntimeError(f"serve exited with {await proc.wait()} before starting"))


def serve_env() -> dict[str, str]:
    """The environment of a `serve` the tests start: none of the runner's settings."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SSE_AUDIT_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }


@contextlib.asynccontextmanager
async def serve_process(upstream: URL, *args: str, timeout: float = 30.0) -> AsyncIterator[ServeProcess]:
    env = serve_env()
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
        env=env,
    )
    lines: list[dict[str, Any]] = []
    started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    reader = asyncio.create_task(_read_lines(proc, lines, started))
    try:
        running = ServeProcess(proc, await asyncio.wait_for(started, timeout), lines)
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
