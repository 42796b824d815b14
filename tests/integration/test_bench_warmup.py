"""The bench's warm-up leaves a proxy's upstream pool with an idle connection for each
concurrent stream of the workload (as under steady traffic), so the measured streams reuse
them; run one after another, the warm-up streams once left it one or two."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import replace
from typing import Any

from sse_audit_proxy.tools.bench.client import run_batch
from sse_audit_proxy.tools.bench.harness import warmup_batch
from sse_audit_proxy.tools.bench.workloads import FULL, LATENCY
from sse_audit_proxy.tools.gateway import Timing, create_app
from tests.conftest import start_app


def established_to(port: int) -> int:
    """This process's established TCP connections (IPv4) whose far end is 127.0.0.1:`port`
    (the proxy's, to the gateway). Only its own sockets: another test process's connection
    from an ephemeral port of the same number looks the same from its server's side, and
    a CI run with four workers once counted 26 for 12."""
    own: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # (the listing's own descriptor is gone by now)
            own.add(os.readlink(f"/proc/self/fd/{fd}"))
    count = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and remote == f"0100007F:{port:04X}" and f"socket:[{inode}]" in own:
                count += 1
    return count


async def test_warmup_fills_the_pool_to_the_workloads_concurrency(proxy: Any) -> None:
    runner, gateway = await start_app(create_app(Timing(jitter=0.0)))
    try:
        p = await proxy(gateway)
        workload = replace(FULL[LATENCY], warmup=12, open_over=0.3)
        result = await run_batch(warmup_batch(workload, p.url))
        assert result.streams_ok == 12
        await asyncio.sleep(0.2)
        assert established_to(gateway.port or 0) == 12
        # The same streams one after another (no first-token wait) keep a connection or two.
        p2 = await proxy(gateway)
        await run_batch(replace(warmup_batch(workload, p2.url), ttft_ms=0.0))
        await asyncio.sleep(0.2)
        assert established_to(gateway.port or 0) - 12 <= 3
    finally:
        await runner.cleanup()
