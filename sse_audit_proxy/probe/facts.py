"""What the probe read from an answer or a stream: plain data, filled by the API readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..sse import Event

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


class Api:
    """One API shape: the requests the probe sends in it and how it reads the answers."""

    name: ClassVar[str]
    path: ClassVar[str]  # under the base URL
    answer_object: ClassVar[str]
    usage_keys: ClassVar[tuple[str, str, str]]  # (prompt, completion, total) as this API names them
    usage_request: ClassVar[str]  # how a streamed request gets its usage, in words

    def control(self, model: str) -> dict[str, Any]:
        raise NotImplementedError

    def stream(self, model: str) -> dict[str, Any]:
        raise NotImplementedError

    def tool_call(self, model: str) -> dict[str, Any]:
        raise NotImplementedError

    def tool_result(self, model: str, call: ToolCallSeen) -> dict[str, Any]:
        raise NotImplementedError

    def no_tool(self, model: str) -> dict[str, Any]:
        raise NotImplementedError

    def after_cancel(self, model: str) -> dict[str, Any]:
        raise NotImplementedError

    def read_answer(self, doc: Any) -> Answer:
        raise NotImplementedError

    def read_stream(self, events: list[TimedEvent]) -> StreamFacts:
        raise NotImplementedError

    def is_terminal(self, event: Event) -> bool:
        """Whether this event ends the stream (the cancel check looks for it)."""
        raise NotImplementedError
