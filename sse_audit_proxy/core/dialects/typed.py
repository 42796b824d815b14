"""What dialects of typed events (Responses, Anthropic Messages) keep and report alike.

Both end with a terminal event rather than `[DONE]`, carry at most one finish reason per
stream, may end in an in-band failure, and assemble tool input per output item/block.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, ClassVar

from sse_audit_proxy.core.dialects.base import (
    CONTENT,
    ERROR,
    ERROR_EVENT,
    FINISH,
    MALFORMED,
    TERMINAL,
    USAGE,
    Dialect,
    DialectSummary,
    Usage,
    clean_usage,
    held_usage,
    is_done,
    is_error_frame,
    load_object,
    reason_word,
    token_counts,
)
from sse_audit_proxy.core.dialects.tool_args import CUT_REASONS, ToolArgs
from sse_audit_proxy.core.sse import Event

# Events an SDK that skips unnamed frames loses nothing by: a keep-alive, the last event
# (the message is whole by then).
_SKIPPED_HARMLESSLY = frozenset({"ping", "message_stop"})


class TypedEvents(Dialect):
    # True: the `event:` line names the event and the JSON's own `type` is something else
    # (Assistants: a run step's `tool_calls`); an event without one goes to _untyped.
    event_name_first: ClassVar[bool] = False
    # True: the official SDKs pass on only frames with an `event:` line (Anthropic's, Python
    # and TypeScript), so a frame without one is lost to their users: `malformed_frame`.
    event_line_needed: ClassVar[bool] = False
    # True: the official SDKs raise at an `error` event (Anthropic's), so a finish after it
    # never reaches their users and the failure stands; else a later finish says it was not
    # the end (the openai SDK passes a Responses `error` event on and reads on).
    error_is_final: ClassVar[bool] = False
    # True: the official SDKs are the openai ones, which stop reading at `[DONE]` and raise at
    # a frame whose data has a non-empty `error` (but on `thread.` events): nothing after
    # either reaches their callers, a finish, usage or a failure included.
    openai_sdk: ClassVar[bool] = False
    # Events the official SDKs pick by their `event:` line but read by their data's `type`: one
    # without it is lost to their users (Anthropic's; other events lose nothing without it).
    read_by_type: ClassVar[frozenset[str]] = frozenset()

    __slots__ = (
        "_done",
        "_errors",
        "_failed",
        "_finish",
        "_malformed",
        "_raised",
        "_terminal",
        "_tools",
        "_usage",
    )

    def __init__(self) -> None:
        self._done = False  # `[DONE]`: not these protocols' own, but some gateways append it
        self._raised = False  # the SDKs raised at a frame (openai_sdk): they read no more
        self._terminal = False
        self._failed = False
        self._finish: str | None = None
        self._usage: Any = None
        self._errors = 0
        self._malformed = 0
        self._tools = ToolArgs()

    def observe(self, event: Event) -> int:
        data = event.data
        if self.openai_sdk and (self._done or self._raised):  # the SDKs read no more
            return 0
        if is_done(data):
            self._done = True
            return 0
        doc = load_object(data)
        if self.openai_sdk and doc is not None and doc.get("error") and not event.event.startswith("thread."):
            self._raised = True  # the SDKs raise here, whatever follows (a finish too)
        if event.event == ERROR_EVENT:  # whatever its data's `type` says (llama.cpp's)
            self._fail()
            self._error_event(data)
            return TERMINAL | ERROR
        if doc is None:
            self._malformed += 1
            return MALFORMED
        # The JSON `type` decides; the `event:` line is a fallback (some gateways drop one).
        kind = event.event if self.event_name_first else (doc.get("type") or event.event)
        malformed = self._malformed
        if not isinstance(kind, str):  # an upstream's `type` can be any JSON value (unhashable)
            kind = ""
        if event.event in self.read_by_type and not isinstance(doc.get("type"), str):
            # Picked by name, but read by its data's `type` (Anthropic's SDKs): a delta without
            # it loses its text, a `message_delta` its stop reason, and the stream helper raises
            # on a `message_start` or `content_block_start` (a review with the SDK).
            self._malformed += 1
            return MALFORMED
        if self.event_line_needed and not event.event and (kind == ERROR_EVENT or is_error_frame(doc)):
            # An error the SDKs never see: they skip a frame without its `event:` line, and
            # their callers got the answer whole (a review: Anthropic's).
            self._malformed += 1
            return MALFORMED
        bits = self._on(kind, doc) if kind else self._untyped(doc)
        if self.event_line_needed and not event.event and kind not in _SKIPPED_HARMLESSLY:
            self._malformed += 1  # read here, but skipped by the SDKs that pick events by name
        # Counters, not returns, say what went wrong deep in a handler: compare once here.
        return bits if self._malformed == malformed else bits | MALFORMED

    def _on(self, kind: str, doc: dict[str, Any]) -> int:
        """One typed event: the observe() bits."""
        raise NotImplementedError

    def _untyped(self, doc: dict[str, Any]) -> int:
        """A frame with neither a `type` nor an event name."""
        if is_error_frame(doc):  # OpenAI-style `{"error": {...}}`, sent on any route
            self._fail()
            return TERMINAL | ERROR
        self._malformed += 1  # an event we cannot even name
        return MALFORMED

    def _fail(self) -> None:
        """The upstream reported failure in-band: the stream ends there. Not after a normal
        finish on the openai SDKs' routes, where they pass an error event on and their callers
        hold the answer whole, unless they raise at it (a frame with an `error`)."""
        self._errors += 1
        self._terminal = True
        if not (self.openai_sdk and self._finish is not None and not self._raised):
            self._failed = True

    def _error_event(self, data: bytes) -> None:
        """What else an `error` event's data says (Responses: its `sequence_number`)."""

    def _finished(self, reason: str) -> None:
        """The response finished normally, so an earlier error was not its end (unless the
        SDKs raise at one: error_is_final)."""
        self._finish = reason_word(reason)
        if not (self.error_is_final or self._raised):
            self._failed = False

    def observe_unread(self, name: str) -> int | None:
        if name == ERROR_EVENT:
            self._fail()
            return TERMINAL | ERROR
        return self._named(name) if name else None

    def _named(self, name: str) -> int | None:
        """observe_unread of a named frame: its bits (an end event taken as seen), None when
        this dialect cannot tell what an event of that name says."""
        return None

    def _cut_call(self) -> tuple[Hashable, ...]:
        """The call a finish reason that cuts output short ended in (CUT_REASONS), if any."""
        last = self._tools.last
        return (last,) if last is not None and self._finish in CUT_REASONS else ()

    def _tokens(self, usage: Usage | None) -> tuple[int | None, int | None]:
        return token_counts(usage)

    def _anomalies(self) -> tuple[str, ...]:
        return ()

    def summary(self) -> DialectSummary:
        usage = clean_usage(self._usage)
        prompt, completion = self._tokens(usage)
        return DialectSummary(
            terminal=self._terminal,
            failed=self._failed,
            done=self._done,
            finish_reasons=[self._finish] if self._finish else [],
            missing_finish_reason=self._finish is None,
            usage=usage,
            prompt_tokens=prompt,
            completion_tokens=completion,
            error_events=self._errors,
            malformed_frames=self._malformed + self._tools.dropped,
            tool_calls=self._tools.count,
            invalid_tool_arguments=self._tools.invalid(cut := self._cut_call()),
            empty_tool_arguments=self._tools.empty(cut),
            broken_tool_arguments=self._tools.broken(cut),
            anomalies=self._anomalies(),
        )


class NamedEvents(TypedEvents):
    """Typed events whose names say all a verdict needs: deltas of output (content), one
    normal end (`.done`, `.completed`, carrying usage), an `error` event or type. For the
    OpenAI endpoints that stream something other than text: speech, transcriptions, images."""

    content_events: ClassVar[frozenset[str]] = frozenset()
    end_events: ClassVar[frozenset[str]] = frozenset()
    openai_sdk = True
    expects_finish_reason = False  # the end event is the finish: without one, `truncated`
    expects_usage = False  # usage is read when the end carries it, never asked for

    __slots__ = ()

    def trusts_type(self, name: str) -> bool:
        return name not in self.end_events  # (an `error` is a failure either way: see base)

    def _on(self, kind: str, doc: dict[str, Any]) -> int:
        if kind in self.content_events:
            return CONTENT
        if kind in self.end_events:
            self._terminal = True
            self._finished("completed")
            usage = doc.get("usage")
            if usage:
                self._usage = held_usage(usage)
                return TERMINAL | FINISH | USAGE
            return TERMINAL | FINISH
        if kind == ERROR_EVENT:
            self._fail()
            return TERMINAL | ERROR
        return 0

    def _named(self, name: str) -> int:
        return self._on(name, {})  # the name says all; what an end carried (usage) is unknown
