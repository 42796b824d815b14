"""Event streams on routes we have no dialect for: timed, never judged on content."""

from __future__ import annotations

from sse_audit_proxy.core.dialects.base import (
    CONTENT,
    ERROR,
    ERROR_EVENT,
    TERMINAL,
    Dialect,
    DialectSummary,
    is_done,
    is_error_frame,
    load_object,
)
from sse_audit_proxy.core.sse import Event


class Generic(Dialect):
    """Every data frame counts as content; there is no end marker to miss.

    An `{"error": ...}` frame is recognised here too, so that an in-band failure reads the
    same on every route."""

    route = "other"
    expects_finish_reason = False
    expects_usage = False  # usage is not read here: its absence cannot be told
    has_end_marker = False
    empty_event_raises = False  # (no SDK known to read frames here)
    reads_json_lines = True  # and the native JSON-lines APIs (NativeLines)

    __slots__ = ("_done", "_errors", "_failed")

    @classmethod
    def loses_to_bom(cls, line: bytes) -> bool:
        return False  # no client known to read the route

    def __init__(self) -> None:
        self._done = False
        self._errors = 0
        self._failed = False  # the last data frame was an error frame

    def observe(self, event: Event) -> int:
        if event.event == ERROR_EVENT:
            self._errors += 1
            self._failed = True
            return ERROR
        return self.observe_data(event.data)

    def observe_unread(self, name: str) -> int | None:
        if name == ERROR_EVENT:
            return self.observe(Event(name, b""))
        self._failed = False
        return CONTENT  # every data frame is: an image, a long document

    def observe_data(self, data: bytes) -> int:
        if is_done(data):
            self._done = True
            return TERMINAL
        if b'"error"' in data and data[:1] == b"{":  # only then is it worth parsing
            doc = load_object(data)
            if doc is not None and is_error_frame(doc):
                self._errors += 1
                self._failed = True
                return ERROR
        self._failed = False
        return CONTENT

    def summary(self) -> DialectSummary:
        return DialectSummary(
            terminal=self._done,
            failed=self._failed,
            done=self._done,
            missing_finish_reason=False,
            error_events=self._errors,
        )
