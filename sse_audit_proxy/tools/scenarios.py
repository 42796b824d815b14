"""The demo gateway's fault scenarios, and what the proxy must report for each.

One table, read by the gateway (which names exist), the traffic generator (the default mix),
the demo (does each verdict match?), the tests (every row, through the real proxy) and the
docs (the scenario table of docs/tools/scenarios.md is generated from here).

The verdicts are those of a streaming Chat Completions request that asks for
`stream_options.include_usage`, which is what `sse-audit-proxy traffic` sends by default.
"""

from __future__ import annotations

from dataclasses import dataclass

from sse_audit_proxy.core.audit import Anomaly, End, Outcome

MODEL_PREFIX = "demo-"
SCENARIO_HEADER = "X-Demo-Scenario"


# The function the clients offer and the tool-call scenarios call: get_weather(city, unit).
TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
}


@dataclass(slots=True, frozen=True)
class Scenario:
    name: str
    does: str  # how the gateway (or, for `cancel`, the client) misbehaves
    outcome: Outcome
    anomalies: tuple[Anomaly, ...]
    end: End  # the record's `end_reason`
    why: str  # why the proxy reports what it does
    weight: int = 1  # share in the default traffic mix

    @property
    def model(self) -> str:
        return MODEL_PREFIX + self.name


_NO_END = (Anomaly.MISSING_DONE, Anomaly.MISSING_FINISH_REASON, Anomaly.MISSING_USAGE)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "healthy",
        "streams token by token, then `finish_reason`, the usage chunk and `[DONE]`",
        Outcome.COMPLETE,
        (),
        End.UPSTREAM_EOF,
        "nothing is wrong",
        weight=10,
    ),
    Scenario(
        "buffered",
        "holds the whole completion for its generation time (at least 0.2 s), "
        "then sends every frame in one write",
        Outcome.COMPLETE,
        (Anomaly.BUFFERED,),
        End.UPSTREAM_EOF,
        "the first token came after most of the wait and the content frames arrived less than 2 ms apart",
    ),
    Scenario(
        "truncated",
        "stops after half the tokens and ends the HTTP body cleanly",
        Outcome.TRUNCATED,
        _NO_END,
        End.UPSTREAM_EOF,
        "the body ended before `[DONE]`; the finish reason and usage never came",
    ),
    Scenario(
        "no-usage",
        "ignores `stream_options.include_usage`: no usage chunk",
        Outcome.COMPLETE,
        (Anomaly.MISSING_USAGE,),
        End.UPSTREAM_EOF,
        "usage was asked for and not sent (not reported when the client did not ask)",
    ),
    Scenario(
        "no-done",
        "sends the finish reason and usage but never `data: [DONE]`",
        Outcome.TRUNCATED,
        (Anomaly.MISSING_DONE,),
        End.UPSTREAM_EOF,
        "`[DONE]` is the Chat Completions end marker, so the stream did not end normally",
    ),
    Scenario(
        "no-finish",
        "never sets a `finish_reason`",
        Outcome.COMPLETE,
        (Anomaly.MISSING_FINISH_REASON,),
        End.UPSTREAM_EOF,
        "the choice ended without a reason",
    ),
    Scenario(
        "slow-first-token",
        "waits the fault delay (default 3 s) before the first token, then streams token by token",
        Outcome.COMPLETE,
        (),
        End.UPSTREAM_EOF,
        "a slow start is not buffering when the tokens then arrive spaced out; see `ttft_ms`",
    ),
    Scenario(
        "stall",
        "pauses for the fault delay (default 3 s) in the middle of the stream",
        Outcome.COMPLETE,
        (),
        End.UPSTREAM_EOF,
        "a stall shorter than `--idle-timeout` is not an anomaly; see `max_gap_ms` and the gap histograms",
    ),
    Scenario(
        "error-midstream",
        'after half the tokens sends `data: {"error": ...}` then `[DONE]` (what vLLM does)',
        Outcome.UPSTREAM_ERROR,
        (Anomaly.ERROR_EVENT,),
        End.UPSTREAM_EOF,
        "the upstream reported a failure in-band: no choice finished "
        "after the error frame, so `[DONE]` ends a failed generation",
    ),
    Scenario(
        "error-no-done",
        'after half the tokens sends `data: {"error": {..., "code": '
        '"rate_limit_exceeded"}}` and ends the body, no `[DONE]` (what LiteLLM does)',
        Outcome.UPSTREAM_ERROR,
        (Anomaly.ERROR_EVENT,),
        End.UPSTREAM_EOF,
        "the upstream reported a failure in-band; a failed stream owes no `[DONE]`, finish reason or usage",
    ),
    Scenario(
        "tool-call",
        "streams a tool call, its arguments in fragments, `finish_reason: tool_calls`",
        Outcome.COMPLETE,
        (),
        End.UPSTREAM_EOF,
        "the fragments assemble into a JSON object; see `tool_calls`",
        weight=2,
    ),
    Scenario(
        "bad-tool-args",
        "streams a tool call whose argument fragments do not assemble into JSON",
        Outcome.COMPLETE,
        (Anomaly.INVALID_TOOL_ARGUMENTS,),
        End.UPSTREAM_EOF,
        "the assembled arguments are not a JSON object",
    ),
    Scenario(
        "malformed",
        "sends one frame whose data is not JSON in the middle of the stream",
        Outcome.COMPLETE,
        (Anomaly.MALFORMED_FRAME,),
        End.UPSTREAM_EOF,
        "a frame could not be parsed",
    ),
    Scenario(
        "http-429",
        "answers 429 with an OpenAI-shaped error and `Retry-After`",
        Outcome.UPSTREAM_ERROR,
        (),
        End.UPSTREAM_STATUS,
        "the upstream refused the request; `status` says how",
    ),
    Scenario(
        "http-500",
        "answers 500 with an OpenAI-shaped error",
        Outcome.UPSTREAM_ERROR,
        (),
        End.UPSTREAM_STATUS,
        "the upstream failed the request; `status` says how",
    ),
    Scenario(
        "keepalive",
        "sends `: ping` comments while it waits the fault delay for the first token, and between tokens",
        Outcome.COMPLETE,
        (),
        End.UPSTREAM_EOF,
        "comments are keep-alives, not content: counted in `keepalives`, and `ttft_ms` "
        "is the first real token",
    ),
    Scenario(
        "crlf",
        "ends every line with CRLF instead of LF",
        Outcome.COMPLETE,
        (),
        End.UPSTREAM_EOF,
        "CRLF is valid SSE",
    ),
    Scenario(
        "reset",
        "sends a TCP reset after half the tokens",
        Outcome.TRUNCATED,
        _NO_END,
        End.UPSTREAM_BROKEN,
        "the connection broke before `[DONE]`; the proxy cuts the "
        "client's stream too, so the client sees a broken stream and not a clean end",
    ),
    Scenario(
        "hang",
        "goes silent after half the tokens and keeps the connection open",
        Outcome.TIMEOUT,
        (),
        End.IDLE_TIMEOUT,
        "no byte for `--idle-timeout` (the demo sets 5 s); the proxy aborts the stream",
    ),
    Scenario(
        "cancel",
        "a healthy stream that pauses halfway for the fault delay; the client (the "
        "traffic generator) disconnects after its first read, so always before `[DONE]`",
        Outcome.CLIENT_DISCONNECT,
        (),
        End.CLIENT_GONE,
        "the client went away; the proxy closes the upstream request at once",
    ),
    Scenario(
        "late-terminator",
        "a healthy stream, but the end of the chunked body (`0\\r\\n"
        "\\r\\n`) is a write of its own, 0.3 s after `[DONE]` (`X-Demo-Terminator-Ms`; "
        "what uvicorn servers such as LiteLLM and vLLM do)",
        Outcome.COMPLETE,
        (),
        End.UPSTREAM_EOF,
        "`[DONE]` ended the stream; a client that closes right after it (the openai Python "
        "SDK does) still gets `complete`; one that reads to the body's end (the Node SDKs) "
        "waits 0.3 s, under `held_open`'s second",
    ),
    Scenario(
        "wrong-content-type",
        "a healthy event stream sent with `Content-Type: text/plain; charset=utf-8`",
        Outcome.COMPLETE,
        (Anomaly.WRONG_CONTENT_TYPE,),
        End.UPSTREAM_EOF,
        "the body is an event stream but not labelled `text/event-stream`: clients and "
        "proxies that go by the label buffer or reject it",
    ),
    Scenario(
        "bursty",
        "makes tokens at the normal pace but releases them in clumps of 10 to 12 "
        "frames, one write each, at least 0.3 s apart (at least 50 tokens)",
        Outcome.COMPLETE,
        (Anomaly.BURSTY,),
        End.UPSTREAM_EOF,
        "at least 3 clumps of 10 or more content frames, each after 0.2 s without "
        "content, hold at least half of the content: something between the model and "
        "the client re-batches the stream",
    ),
    Scenario(
        "usage-mismatch",
        "streams a usage chunk whose token counts differ from the non-streamed answer to the same request",
        Outcome.COMPLETE,
        (),
        End.UPSTREAM_EOF,
        "one stream cannot show it: compare with a non-streamed request (the cutover probe does)",
    ),
)

BY_NAME: dict[str, Scenario] = {s.name: s for s in SCENARIOS}
HEALTHY = BY_NAME["healthy"]
DEFAULT_MIX: tuple[tuple[str, int], ...] = tuple((s.name, s.weight) for s in SCENARIOS)


def lookup(name: str) -> Scenario | None:
    """A scenario by name, with or without the `demo-` prefix."""
    return BY_NAME.get(name.strip().lower().removeprefix(MODEL_PREFIX))


def for_model(model: str) -> Scenario | None:
    """The scenario a model name asks for: `demo-<name>`; None for any other model."""
    if not model.startswith(MODEL_PREFIX):
        return None
    return BY_NAME.get(model[len(MODEL_PREFIX) :])


def verdict(scenario: Scenario) -> str:
    """`outcome` or `outcome + anomaly, ...`: how the verdict is written in the docs."""
    if not scenario.anomalies:
        return scenario.outcome.value
    return f"{scenario.outcome.value} + {', '.join(a.value for a in scenario.anomalies)}"


def markdown_table() -> str:
    """The scenario table of docs/tools/scenarios.md (`tools.doctables` writes it there)."""
    rows = [
        "| model | the gateway | `outcome` | `anomalies` | `end_reason` | why |",
        "|---|---|---|---|---|---|",
    ]
    for s in SCENARIOS:
        anomalies = ", ".join(f"`{a.value}`" for a in s.anomalies) or "none"
        rows.append(
            f"| `{s.model}` | {s.does} | `{s.outcome.value}` | {anomalies} | `{s.end.value}` | {s.why} |"
        )
    return "\n".join(rows) + "\n"
