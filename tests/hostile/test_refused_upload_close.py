"""A client still uploading when the proxy answers: it gets the answer, not a reset.

The proxy answered a request it would not read to the end (a body over --max-body-bytes: its
own `413`; an upstream's early refusal, relayed with `Connection: close`) and closed at once
with the rest of the body unread, which is a reset. A client that writes its whole body before
it reads (node's fetch, httpx, most SDKs) had its upload broken: node's fetch failed with
`ECONNRESET` four times in five instead of returning the `413`. The connection now closes in
stages (RFC 9112 9.6, nginx's lingering close): the proxy shuts its side after the answer,
reads and discards what the client still sends for a bounded time, then closes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from collections import Counter

import pytest
from peers import serve
from relay_support import Handler, owned_upstream
from test_upstream_early_answer import refuse_and_wait
from yarl import URL

SIZE = 30_000_000  # more than the sockets between the client and the proxy hold
CAP = "1000000"  # --max-body-bytes


async def never_answers(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(10)


def upload_then_read(port: int) -> tuple[bytes, str | None]:
    """As an SDK does: the whole body written, then the answer read to its end. The answer's
    status line, and the first socket error met on the way."""
    error = None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % SIZE
        )
        try:
            sock.sendall(b" " * SIZE)
        except OSError as exc:
            error = type(exc).__name__
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except OSError as exc:
            error = error or type(exc).__name__
    return got.split(b"\r\n", 1)[0], error


@pytest.mark.parametrize(
    ("upstream", "cap", "status"),
    [
        (never_answers, CAP, b"413 Request Entity Too Large"),
        (refuse_and_wait, str(2 * SIZE), b"401 Unauthorized"),
    ],
    ids=["body over the cap", "upstream refusal"],
)
async def test_a_client_that_uploads_before_reading_gets_the_answer_and_no_reset(
    upstream: Handler, cap: str, status: bytes
) -> None:
    async with (
        owned_upstream(upstream) as port,
        serve(URL(f"http://127.0.0.1:{port}"), "--max-body-bytes", cap) as child,
    ):
        assert child.url.port is not None
        got = [await asyncio.to_thread(upload_then_read, child.url.port) for _ in range(3)]
    assert got == [(b"HTTP/1.1 " + status, None)] * 3


FETCH = """
const body = " ".repeat(%d);
const seen = {};
for (let i = 0; i < 5; i++) {
  let what;
  try {
    const headers = { "content-type": "application/json" };
    const r = await fetch(process.argv[1], { method: "POST", body, headers });
    await r.text();
    what = String(r.status);
  } catch (e) { what = `${e.message}: ${e.cause?.code ?? e.cause?.message ?? ""}`; }
  seen[what] = (seen[what] ?? 0) + 1;
}
console.log(JSON.stringify(seen));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
async def test_node_fetch_uploading_over_the_cap_gets_413() -> None:
    async with (
        owned_upstream(never_answers) as port,
        serve(URL(f"http://127.0.0.1:{port}"), "--max-body-bytes", CAP) as child,
    ):
        url = f"http://127.0.0.1:{child.url.port}/v1/chat/completions"
        run = await asyncio.to_thread(
            subprocess.run,
            ["node", "--input-type=module", "-e", FETCH % SIZE, url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 0, run.stderr[-2000:]
    assert Counter(json.loads(run.stdout)) == Counter({"413": 5}), run.stdout
