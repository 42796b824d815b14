"""What the probe read from an answer or a stream: plain data, filled by the API readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from sse_audit_proxy.core.sse import Event

Usage = dict[str, Any]
TimedEvent = tuple[float, Event]  # arrival time (seconds after the request was sent), event


@dataclass(slots=True)
class ToolCallSeen:
    call_id: str | None
    name: str | None
    arguments: str  # the fragments (or the non-streamed string), joined
    done_arguments: str | None = None  # Responses: what `.done` said the arguments were


@dataclass(slots=True)
class Answer:
    """A non-streamed answer."""

    problems: list[str] = field(default_factory=list)
    id: str | None = None
    object: str | None = None
    model: str | None = None
    finish: str | None = None  # Chat: finish_reason; Responses: status or incomplete reason
    usage: Usage | None = None
    text: str = ""
    tool_calls: list[ToolCallSeen] = field(default_factory=list)


@dataclass(slots=True)
class StreamFacts:
    """A stream, frame by frame. `problems` are framing faults, each told to the operator."""

    problems: list[str] = field(default_factory=list)
    data_frames: int = 0
    malformed: int = 0
    ids: list[str] = field(default_factory=list)  # distinct, in order of appearance
    objects: list[str] = field(default_factory=list)  # Chat: `object`; Responses: event types
    models: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    usage: Usage | None = None
    usage_where: str = ""  # which frame carried the usage, in words
    text: str = ""
    tool_calls: list[ToolCallSeen] = field(default_factory=list)
    terminal: bool = False  # the API's normal end: `[DONE]`, `response.completed`/`.incomplete`
    done: bool = False  # `data: [DONE]` seen
    errors: list[str] = field(default_factory=list)  # messages of in-band error frames
    content_at: list[float] = field(default_factory=list)  # arrival of each content frame


def distinct(values: list[str], value: Any) -> None:
    if isinstance(value, str) and value not in values and len(values) < 20:
        values.append(value)


def excerpt(data: bytes, limit: int = 80) -> str:
    text = data[:limit].decode("utf-8", "replace")
    return repr(text + ("…" if len(data) > limit else ""))


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def malformed_problem(count: int, first: bytes | None) -> str:
    return (
        f"{count} data frame(s) are not JSON objects (first: {excerpt(first or b'')}): the "
        "gateway, or something between it and you, corrupts frames; OpenAI SDKs raise on them"
    )


class StreamReader:
    """What every API's stream reader shares: JSON frames and the first framing verdicts."""

    def __init__(self, facts: StreamFacts) -> None:
        self.f = facts
        self.first_malformed: bytes | None = None

    def parse(self, data: bytes) -> dict[str, Any] | None:
        """A frame's JSON object, or None (counted as malformed) when it is not one."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            self.f.malformed += 1
            self.first_malformed = self.first_malformed or data
            return None
        return doc

    def judge_frames(self) -> bool:
        """Report missing or malformed frames; False when there is nothing more to judge."""
        f = self.f
        if not f.data_frames:
            f.problems.append("the stream carried no `data:` frames at all")
            return False
        if f.malformed:
            f.problems.append(malformed_problem(f.malformed, self.first_malformed))
        return True
