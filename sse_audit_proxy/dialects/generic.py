"""Event streams on routes we have no dialect for: timed, never judged on content."""

from __future__ import annotations

from ..sse import Event
from .base import CONTENT, DONE_SENTINEL, TERMINAL, Dialect, DialectSummary


class Generic(Dialect):
    """Every data frame counts as content; there is no end marker to miss."""

    route = "other"
    expects_finish_reason = False
    expects_usage = False  # usage is not read here: its absence cannot be told

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done = False

    def observe(self, event: Event) -> int:
        if event.data == DONE_SENTINEL:
            self._done = True
            return TERMINAL
        return CONTENT

    def summary(self) -> DialectSummary:
        return DialectSummary(terminal=True, done=self._done, missing_finish_reason=False)
