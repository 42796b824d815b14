"""The three workloads of the benchmark, as issue 7 defines them, and their smoke versions."""

from __future__ import annotations

from dataclasses import dataclass

LATENCY, THROUGHPUT, MEMORY = "latency", "throughput", "memory"
NAMES = (LATENCY, THROUGHPUT, MEMORY)


@dataclass(slots=True, frozen=True)
class Workload:
    name: str
    streams: int  # concurrent streams
    frames: int  # text tokens per stream; each stream has frames + 4 SSE frames in all
    interval_ms: float  # between tokens (0: as fast as the gateway can write)
    ttft_ms: float  # the gateway's time to the first token
    open_over: float  # seconds over which the stream starts are spread
    timeout: float  # seconds after the start when unfinished streams are cut
    stamps: bool = False  # frames carry "sent_at": one-way latency is measured
    sample_after: float = 0.0  # memory: seconds after the start when RSS is sampled
    warmup: int = 0  # streams sent before measuring (fills the proxy's upstream pool)


# Latency: the 50 starts are 20.4 ms apart (a 50/s arrival rate, so request set-up is part of
# the load as in steady traffic), which also spreads the streams' phases evenly over the 20 ms
# frame interval: real streams are not in lockstep, and a lockstep burst would measure the
# queue behind 50 simultaneous frames rather than the cost of one.
FULL = {
    LATENCY: Workload(
        LATENCY,
        streams=50,
        frames=200,
        interval_ms=20.0,
        ttft_ms=20.0,
        open_over=0.02 * 51,
        timeout=30.0,
        stamps=True,
        warmup=50,
    ),
    THROUGHPUT: Workload(
        THROUGHPUT,
        streams=200,
        frames=1000,
        interval_ms=0.0,
        ttft_ms=0.0,
        open_over=0.2,
        timeout=60.0,
        warmup=200,
    ),
    # 20 tokens 250 ms apart: every stream is open from the last start (2 s) to the first end
    # (5 s), and RSS is sampled in between.
    MEMORY: Workload(
        MEMORY,
        streams=1000,
        frames=20,
        interval_ms=250.0,
        ttft_ms=0.0,
        open_over=2.0,
        timeout=30.0,
        sample_after=3.5,
        warmup=20,
    ),
}

SMOKE = {
    LATENCY: Workload(
        LATENCY,
        streams=4,
        frames=10,
        interval_ms=5.0,
        ttft_ms=5.0,
        open_over=0.005 * 5,
        timeout=20.0,
        stamps=True,
        warmup=2,
    ),
    THROUGHPUT: Workload(
        THROUGHPUT,
        streams=4,
        frames=1000,
        interval_ms=0.0,
        ttft_ms=0.0,
        open_over=0.01,
        timeout=20.0,
        warmup=2,
    ),
    MEMORY: Workload(
        MEMORY,
        streams=20,
        frames=8,
        interval_ms=100.0,
        ttft_ms=0.0,
        open_over=0.1,
        timeout=20.0,
        sample_after=0.4,
        warmup=2,
    ),
}


def sse_frames(frames: int) -> int:
    """SSE frames of one healthy chat stream from the demo gateway with `frames` tokens:
    the role chunk, the tokens, the finish chunk, the usage chunk and `[DONE]`."""
    return frames + 4
