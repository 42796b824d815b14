"""When each piece of a stream is written, per scenario. Pure: frames and timing in, a script out.

A script is a list of (seconds after the request arrived, bytes) writes and how the stream
ends. The gateway only has to sleep until each time and write: every fault is decided here,
where it can be tested without a socket.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from sse_audit_proxy.tools.gateway.shapes import Frames

MIN_BUFFERED_HOLD = 0.2  # the buffered scenario holds at least this long: always judged buffered
PING = b": ping\n\n"
PINGS_BEFORE_FIRST_TOKEN = 4
PING_EVERY_TOKENS = 10
# The bursty habit (a re-batching gateway, a buffer that flushes when full): tokens are made at
# the normal pace but released in clumps of at most BURST_FRAMES, at least MIN_BURST_SILENCE
# apart even with fast timing, so every clump after the first always counts as a burst.
BURST_FRAMES = 12
MIN_BURST_SILENCE = 0.3
BURSTY_MIN_FRAMES = 50  # five clumps of 10: the smallest count split into 10 to 12 per clump


class EndAction(Enum):
    EOF = "eof"  # end the body cleanly (the last chunk of a chunked body)
    RESET = "reset"  # TCP reset
    HANG = "hang"  # keep the connection open, silent, until the client goes


@dataclass(slots=True, frozen=True)
class Timing:
    """How fast the gateway answers; flags set the defaults, X-Demo-* headers override."""

    ttft: float = 0.3  # seconds to the first token
    interval: float = 0.025  # seconds between tokens
    jitter: float = 0.25  # each interval varies by up to this share, drawn from the prompt
    fault_delay: float = 3.0  # the stall, the slow first token, the keep-alive wait
    frames: int | None = None  # text tokens per answer; None: decided by the prompt
    sent_at: bool = False  # every JSON frame carries "sent_at" (its send time, epoch seconds)
    terminator_delay: float = 0.3  # late-terminator: from the last frame to the body's end


@dataclass(slots=True)
class Script:
    writes: list[tuple[float, bytes]]
    end: EndAction = EndAction.EOF


def cut_point(content_writes: int) -> int:
    """Where the mid-stream faults strike: after half the content."""
    return max(1, content_writes // 2)


def _times(n: int, first: float, timing: Timing, seed: int) -> list[float]:
    """Send times of n content writes plus the tail, spaced by the jittered interval."""
    rng = random.Random(seed ^ 0x5EED)
    times = [first]
    t = first
    interval, jitter = timing.interval, timing.jitter
    for _ in range(n):
        t += interval * (1.0 + jitter * (2.0 * rng.random() - 1.0)) if jitter else interval
        times.append(t)
    return times


def clumps(times: list[float], content: list[bytes], tail: bytes) -> list[tuple[float, bytes]]:
    """The bursty habit: content made at `times` but released in even clumps of at most
    BURST_FRAMES, one write each, when its last token is made and at least MIN_BURST_SILENCE
    after the previous clump; the tail goes with the last clump."""
    n = len(content)
    count = max(1, -(-n // BURST_FRAMES))
    writes: list[tuple[float, bytes]] = []
    released, start = float("-inf"), 0
    for left in range(count, 0, -1):
        end = start + (n - start) // left
        released = max(times[max(end - 1, 0)], released + MIN_BURST_SILENCE)
        writes.append((released, b"".join(content[start:end]) + (tail if left == 1 else b"")))
        start = end
    return writes


def compose(
    frames: Frames,
    scenario: str,
    timing: Timing,
    seed: int,
    *,
    bursty: bool = False,
    late_terminator: bool = False,
) -> Script:
    """The scenario's script; `bursty` and `late_terminator` add those habits (docs/tools/scenarios.md)."""
    script = _compose(frames, scenario, timing, seed, bursty)
    if late_terminator and script.end is EndAction.EOF:
        # uvicorn's habit: the chunked body's terminator is a write of its own, a while later.
        last = max((at for at, _ in script.writes), default=0.0)
        script.writes.append((last + timing.terminator_delay, b""))
    return script


def _compose(frames: Frames, scenario: str, timing: Timing, seed: int, bursty: bool) -> Script:
    content = frames.content
    n = len(content)
    first = timing.fault_delay if scenario in ("slow-first-token", "keepalive") else timing.ttft
    times = _times(n, first, timing, seed)
    writes: list[tuple[float, bytes]] = []
    if frames.start:
        writes.append((0.0, frames.start))

    if scenario == "buffered":
        hold = max(times[-1], MIN_BUFFERED_HOLD)
        return Script([(hold, frames.start + b"".join(content) + frames.tail)])

    if scenario in ("truncated", "reset", "hang"):
        cut = cut_point(n)
        writes.extend(zip(times[:cut], content[:cut], strict=True))
        end = {"truncated": EndAction.EOF, "reset": EndAction.RESET}.get(scenario, EndAction.HANG)
        writes.append((times[cut], b""))  # the end comes one interval after the last token
        return Script(writes, end)

    if scenario in ("stall", "cancel"):
        # `cancel`: the pause guarantees a client that leaves early leaves before `[DONE]`,
        # however the reads before it were coalesced.
        cut = cut_point(n)
        times = times[:cut] + [t + timing.fault_delay for t in times[cut:]]

    if bursty:
        writes.extend(clumps(times, content, frames.tail))
    else:
        writes.extend(zip(times, content, strict=False))
        writes.append((times[-1], frames.tail))

    if scenario == "keepalive":
        step = first / PINGS_BEFORE_FIRST_TOKEN
        pings = [(i * step, PING) for i in range(PINGS_BEFORE_FIRST_TOKEN)]
        pings += [
            ((times[i] + times[i + 1]) / 2, PING)
            for i in range(PING_EVERY_TOKENS - 1, n - 1, PING_EVERY_TOKENS)
        ]
        writes = sorted(writes + pings, key=lambda w: w[0])
    elif scenario == "crlf":
        writes = [(t, data.replace(b"\n", b"\r\n")) for t, data in writes]
    return Script(writes)
