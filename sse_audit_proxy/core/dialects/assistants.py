"""OpenAI Assistants run streams (`/v1/threads/runs`, `/v1/threads/{id}/runs`,
`.../runs/{id}/submit_tool_outputs`, with `stream: true`).

The `event:` line names each event; its data is the object it concerns (a run, a step, a
message delta), whose own `type` is something else (a step's `tool_calls`). Message and step
deltas are content. The run's last status ends it: `thread.run.completed`,
`thread.run.incomplete` (with its reason), `thread.run.requires_action` (waiting for tool
outputs) and `thread.run.cancelled` normally; `thread.run.failed`, `thread.run.expired` and
an `error` event as a failure. Then `event: done` with `data: [DONE]`, which is expected.
"""

from __future__ import annotations

import re
from typing import Any

from sse_audit_proxy.core.dialects.base import (
    CONTENT,
    ERROR,
    FINISH,
    TERMINAL,
    USAGE,
    held_usage,
    is_error_frame,
    loses_data_line,
    sse_field,
)
from sse_audit_proxy.core.dialects.typed import TypedEvents

_CONTENT = frozenset({"thread.message.delta", "thread.run.step.delta"})
# The run's last status: the finish reason it stands for (None: a failure).
_ENDS: dict[str, str | None] = {
    "thread.run.completed": "completed",
    "thread.run.incomplete": "incomplete",
    "thread.run.requires_action": "requires_action",
    "thread.run.cancelled": "cancelled",
    "thread.run.failed": None,
    "thread.run.expired": None,
}
_BY_STATUS = {event.rpartition(".")[2]: event for event in _ENDS}  # an unnamed run: its status


class Assistants(TypedEvents):
    route = "assistants_runs"
    always_streams = True
    path_suffixes = ("/threads/runs", "/submit_tool_outputs")
    path_pattern = re.compile(r"/threads/[^/]+/runs$")  # not every `/runs` (evals' are JSON)
    expects_done = True
    expects_finish_reason = False  # the run's last status is the finish: without one, `truncated`
    expects_usage = False  # a run waiting for tool outputs has none yet
    event_name_first = True
    openai_sdk = True

    __slots__ = ()

    @classmethod
    def loses_to_bom(cls, line: bytes) -> bool:
        # The openai SDK reads `thread.` events by their names: one without loses its event key.
        field, value = sse_field(line)
        return loses_data_line(line) or (field == b"event" and bool(value))

    def _untyped(self, doc: dict[str, Any]) -> int:
        """An event a gateway sent without its `event:` line: named from its object."""
        kind = doc.get("object")
        if kind == "thread.run":
            kind = _BY_STATUS.get(str(doc.get("status")))
        if isinstance(kind, str) and (kind in _CONTENT or kind in _ENDS):
            return self._on(kind, doc)
        if is_error_frame(doc):
            self._fail()
            return TERMINAL | ERROR
        return 0  # an object of a kind this audit does not judge

    def _on(self, kind: str, doc: dict[str, Any]) -> int:
        if kind in _CONTENT:
            return CONTENT if doc.get("delta") else 0
        if kind not in _ENDS:
            return 0
        self._terminal = True
        bits = TERMINAL | FINISH
        usage = doc.get("usage")
        if usage:
            self._usage = held_usage(usage)
            bits |= USAGE
        reason = _ENDS[kind]
        if reason is None:
            self._fail()
            self._finish = kind.rpartition(".")[2]  # `failed`, `expired`
            return bits | ERROR
        if reason == "incomplete":
            details = doc.get("incomplete_details")
            found = details.get("reason") if isinstance(details, dict) else None
            reason = found if isinstance(found, str) and found else reason
        self._finished(reason)
        return bits

    def _named(self, name: str) -> int:
        if name in _ENDS:
            return self._on(name, {})  # what it said beyond its name (usage, a reason) is unknown
        return CONTENT if name in _CONTENT else 0
