"""What an API shape is to the probe: the requests it sends in it and how it reads answers.

The requests are the same in every shape (a counting prompt, plain and streamed; a forced tool
call, its result, text with tools offered; a short one after a cancel); each shape says how
a body is built, how a non-streamed answer holds its completion, and how its stream is read.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sse_audit_proxy.core.sse import Event
from sse_audit_proxy.tools.probe.facts import Answer, StreamFacts, TimedEvent, ToolCallSeen, as_str
from sse_audit_proxy.tools.probe.prompts import COUNT, COUNT_SHORT, MAX_TOKENS, READY, SHORT_MAX_TOKENS


class Api:
    name: ClassVar[str]
    title: ClassVar[str]  # in messages: "the Chat Completions format"
    path: ClassVar[str]  # under the base URL
    answer_object: ClassVar[str]
    usage_keys: ClassVar[tuple[str, str, str]]  # (prompt, completion, total) in this API's names
    usage_request: ClassVar[str]  # how a streamed request gets its usage, in words
    tools: ClassVar[tuple[dict[str, Any], ...]]  # the probe's tool, declared this API's way

    # Requests ---------------------------------------------------------------------------

    def body(
        self, model: str, prompt: str | list[Any], *, stream: bool, max_tokens: int = MAX_TOKENS, **extra: Any
    ) -> dict[str, Any]:
        raise NotImplementedError

    def control(self, model: str) -> dict[str, Any]:
        return self.body(model, COUNT, stream=False)

    def stream(self, model: str) -> dict[str, Any]:
        return self.body(model, COUNT, stream=True)

    def tool_call(self, model: str) -> dict[str, Any]:
        raise NotImplementedError

    def tool_result(self, model: str, call: ToolCallSeen) -> dict[str, Any]:
        raise NotImplementedError

    def no_tool(self, model: str) -> dict[str, Any]:
        return self.body(model, COUNT_SHORT, stream=True, tools=self.tools, tool_choice="none")

    def after_cancel(self, model: str) -> dict[str, Any]:
        return self.body(model, READY, stream=False, max_tokens=SHORT_MAX_TOKENS)

    # Reading ----------------------------------------------------------------------------

    def read_answer(self, doc: Any) -> Answer:
        a = Answer()
        if not isinstance(doc, dict):
            a.problems.append("the answer is not a JSON object")
            return a
        a.id, a.object, a.model = (as_str(doc.get(k)) for k in ("id", "object", "model"))
        if isinstance(doc.get("usage"), dict):
            a.usage = doc["usage"]
        if a.object != self.answer_object:
            a.problems.append(
                f"`object` is {a.object!r}, not {self.answer_object!r}: the route "
                f"does not answer in the {self.title} format"
            )
        self.read_completion(doc, a)
        return a

    def read_completion(self, doc: dict[str, Any], a: Answer) -> None:
        """The finish, text and tool calls of a non-streamed answer."""
        raise NotImplementedError

    def read_stream(self, events: list[TimedEvent]) -> StreamFacts:
        raise NotImplementedError

    def is_terminal(self, event: Event) -> bool:
        """Whether this event ends the stream (the cancel looks for it)."""
        raise NotImplementedError
