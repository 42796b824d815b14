"""A connection that received bytes it did not ask for is never reused (issue 12, item 1).

aiohttp's client pool kept parsing responses that arrived on an idle pooled connection and
queued them for whoever used it next: one client received another's answer.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.hostile.relay_support import RawRequest, raw_upstream

STRAY = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY"


def answer(req: RawRequest) -> bytes:
    body = req.target
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def later(writer: asyncio.StreamWriter, delay: float, data: bytes) -> None:
    await asyncio.sleep(delay)
    if not writer.is_closing():
        writer.write(data)


async def test_stray_response_arriving_on_an_idle_connection_is_never_given_to_the_next_client(
    proxy: Any, http: aiohttp.ClientSession
) -> None:
    tasks: set[asyncio.Task[None]] = set()

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(req))
        task = asyncio.create_task(later(writer, 0.2, STRAY))  # unsolicited, 0.2 s later
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        for i in range(4):
            async with http.get(p.url / f"r{i}") as resp:
                assert (resp.status, await resp.read()) == (200, f"/r{i}".encode())
            await asyncio.sleep(0.3)  # the stray has arrived on the idle pooled connection
        # Each stray killed its connection: every request needed a fresh one.
        assert up.connections == 4


async def test_in_1000_interleaved_tries_no_client_ever_receives_another_clients_answer(
    proxy: Any
) -> None:
    tasks: set[asyncio.Task[None]] = set()
    rng = random.Random(7)

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        kind = rng.randrange(4)
        if kind == 0:  # stray glued right behind the answer, in the same read
            writer.write(answer(req) + STRAY)
        elif kind == 1:  # stray a moment later, while the connection idles in the pool
            writer.write(answer(req))
            task = asyncio.create_task(later(writer, rng.uniform(0, 0.01), STRAY))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        else:  # a normal request
            writer.write(answer(req))

    wrong: list[tuple[bytes, bytes]] = []
    strays = 0

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))

        async def client(n: int) -> None:
            nonlocal strays
            async with aiohttp.ClientSession() as http:
                for i in range(100):
                    want = f"/c{n}-{i}".encode()
                    async with http.get(p.url / want.decode()[1:]) as resp:
                        got = await resp.read()
                    if got == b"STRAY":
                        strays += 1  # the upstream's own junk, raced into a request: no one's data
                    elif got != want:
                        wrong.append((want, got))

        await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(10))), 60)
    assert wrong == [], f"{len(wrong)} clients received another request's answer: {wrong[:5]}"
    assert strays < 1000


@pytest.mark.parametrize("delay", [0.0, 0.05], ids=["same-read", "while-idle"])
@pytest.mark.parametrize("case", ["304", "204", "HEAD"])
async def test_bytes_after_a_response_without_body_are_never_forwarded(
    case: str, delay: float, proxy: Any
) -> None:
    evil = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"
    tasks: set[asyncio.Task[None]] = set()

    async def script(req: RawRequest, writer: asyncio.StreamWriter) -> None:
        if req.target == b"/first":
            if case == "HEAD":
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
            else:
                head = b"HTTP/1.1 %s X\r\n\r\n" % case.encode()
            if delay:
                writer.write(head)
                task = asyncio.create_task(later(writer, delay, evil))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                writer.write(head + evil)
        else:
            writer.write(answer(req))

    async with raw_upstream(script) as up:
        p = await proxy(URL(f"http://127.0.0.1:{up.port}"))
        async with aiohttp.ClientSession() as http:
            method = "HEAD" if case == "HEAD" else "GET"
            async with http.request(method, p.url / "first") as resp:
                assert resp.status == (200 if case == "HEAD" else int(case))
                assert await resp.read() == b""
            await asyncio.sleep(delay + 0.05)
            for i in range(5):
                async with http.get(p.url / f"next{i}") as resp:
                    assert (resp.status, await resp.read()) == (200, f"/next{i}".encode())
