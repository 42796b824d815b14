"""The Responses API as the probe sees it: the same checks as Chat, in typed-event shapes.

Pure. A Responses stream is `event:`-typed JSON frames with a rising `sequence_number`:
`response.created` first, output items opened (`.added`) and closed (`.done`), deltas in
between, and `response.completed` (or `.incomplete`, `.failed`) last, carrying usage.
The API has no `seed`: the probe relies on temperature 0 alone here.
"""

from __future__ import annotations

from typing import Any

import orjson

from sse_audit_proxy.core.dialects.base import DONE_SENTINEL
from sse_audit_proxy.core.sse import Event
from sse_audit_proxy.tools.probe.api import Api
from sse_audit_proxy.tools.probe.chat import error_message
from sse_audit_proxy.tools.probe.facts import (
    Answer,
    StreamFacts,
    StreamReader,
    TimedEvent,
    ToolCallSeen,
    as_dict,
    as_str,
    distinct,
)
from sse_audit_proxy.tools.probe.prompts import MAX_TOKENS, TOOL, TOOL_RESULT, WEATHER

TEXT_DELTA = "response.output_text.delta"
ARGS_DELTA = "response.function_call_arguments.delta"
ARGS_DONE = "response.function_call_arguments.done"
OTHER_CONTENT = frozenset(
    {
        "response.refusal.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.audio.delta",
        "response.audio.transcript.delta",
    }
)
TERMINALS = frozenset({"response.completed", "response.incomplete", "response.failed", "response.done"})


def finish_of(response: dict[str, Any], kind: str = "") -> str:
    """The finish of a response: its status, or for an incomplete one the reason."""
    status = response.get("status")
    if kind == "response.failed" or status == "failed":
        return "failed"
    if kind == "response.incomplete" or status == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return reason if isinstance(reason, str) and reason else "incomplete"
    return status if isinstance(status, str) and status else "completed"


class ResponsesApi(Api):
    name = "responses"
    title = "Responses"
    path = "responses"
    answer_object = "response"
    usage_keys = ("input_tokens", "output_tokens", "total_tokens")
    usage_request = "the terminal event's `response.usage`"
    tools = ({"type": "function", **TOOL},)

    def is_terminal(self, event: Event) -> bool:
        try:
            doc = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return False
        kind = as_dict(doc).get("type")
        return kind in TERMINALS or kind == "error"

    # Requests ---------------------------------------------------------------------------

    def body(
        self, model: str, prompt: str | list[Any], *, stream: bool, max_tokens: int = MAX_TOKENS, **extra: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "input": prompt,
            "temperature": 0,
            "max_output_tokens": max_tokens,
        }
        if stream:
            body["stream"] = True
        body.update(extra)
        return body

    def tool_call(self, model: str) -> dict[str, Any]:
        return self.body(
            model,
            WEATHER,
            stream=True,
            tools=self.tools,
            tool_choice={"type": "function", "name": TOOL["name"]},
        )

    def tool_result(self, model: str, call: ToolCallSeen) -> dict[str, Any]:
        given = [
            {"role": "user", "content": WEATHER},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT},
        ]
        return self.body(model, given, stream=True, tools=self.tools, tool_choice="auto")

    # Reading ----------------------------------------------------------------------------

    def read_completion(self, doc: dict[str, Any], a: Answer) -> None:
        if "status" in doc:
            a.finish = finish_of(doc)
        if a.finish == "failed":
            a.problems.append(f"the response failed ({error_message(doc.get('error'))})")
        output = doc.get("output")
        if not isinstance(output, list):
            a.problems.append("the answer has no `output`: there is no completion in it")
            return
        for item in output:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "function_call":
                a.tool_calls.append(
                    ToolCallSeen(
                        as_str(item.get("call_id")),
                        as_str(item.get("name")),
                        as_str(item.get("arguments")) or "",
                    )
                )
            elif item.get("type") == "message":
                for part in item.get("content") or ():
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        a.text += part["text"]

    def read_stream(self, events: list[TimedEvent]) -> StreamFacts:
        f = StreamFacts()
        reader = _ResponsesStream(f)
        for t, event in events:
            reader.frame(t, event.event, event.data)
        reader.judge()
        return f


class _ResponsesStream(StreamReader):
    def __init__(self, facts: StreamFacts) -> None:
        super().__init__(facts)
        self.first_kind: str | None = None
        self.untyped = 0
        self.misnamed: tuple[str, str] | None = None
        self.seq: int | None = None
        self.seq_missing = 0
        self.seq_breaks: list[tuple[int, int]] = []
        self.ended_by: str | None = None
        self.after_end = 0
        self.added: dict[str, str] = {}  # item id -> item type
        self.item_done: set[str] = set()
        self.calls: dict[str, ToolCallSeen] = {}

    def frame(self, t: float, name: str, data: bytes) -> None:
        f = self.f
        f.data_frames += 1
        if data == DONE_SENTINEL:  # optional here: some gateways append one
            f.done = True
            return
        if self.ended_by is not None:
            self.after_end += 1
            return
        doc = self.parse(data)
        if doc is None:
            return
        kind = doc.get("type")
        if not isinstance(kind, str) or not kind:
            self.untyped += 1
            kind = name
        elif name and name != kind and self.misnamed is None:
            self.misnamed = (name, kind)
        self.first_kind = self.first_kind or kind
        distinct(f.objects, kind)
        self._sequence(doc.get("sequence_number"))
        response = doc.get("response")
        if isinstance(response, dict):
            distinct(f.ids, response.get("id"))
            distinct(f.models, response.get("model"))
        if self._event(kind, doc):
            f.content_at.append(t)

    def _sequence(self, seq: Any) -> None:
        if not isinstance(seq, int) or isinstance(seq, bool):
            self.seq_missing += 1
            return
        if self.seq is not None and seq != self.seq + 1 and len(self.seq_breaks) < 5:
            self.seq_breaks.append((self.seq, seq))
        self.seq = seq

    def _event(self, kind: str, doc: dict[str, Any]) -> bool:
        """Take in one typed event; True when it carried content."""
        f = self.f
        delta = doc.get("delta")
        if kind == TEXT_DELTA:
            if isinstance(delta, str):
                f.text += delta
            return bool(delta)
        if kind == ARGS_DELTA:
            call = self._call(doc.get("item_id"))
            if isinstance(delta, str):
                call.arguments += delta
            return bool(delta)
        if kind in OTHER_CONTENT:
            return bool(delta)
        item = doc.get("item")
        if kind == "response.output_item.added" and isinstance(item, dict):
            item_id = as_str(item.get("id")) or f"#{doc.get('output_index')}"
            self.added[item_id] = as_str(item.get("type")) or "?"
            if item.get("type") == "function_call":
                call = self._call(item_id)
                call.call_id, call.name = as_str(item.get("call_id")), as_str(item.get("name"))
        elif kind == "response.output_item.done" and isinstance(item, dict):
            item_id = as_str(item.get("id")) or f"#{doc.get('output_index')}"
            self.item_done.add(item_id)
            if item.get("type") == "function_call" and isinstance(item.get("arguments"), str):
                call = self._call(item_id)
                if call.done_arguments is None:
                    call.done_arguments = item["arguments"]
        elif kind == ARGS_DONE and isinstance(doc.get("arguments"), str):
            self._call(doc.get("item_id")).done_arguments = doc["arguments"]
        elif kind in TERMINALS:
            self.ended_by = kind
            f.terminal = kind != "response.failed"
            response = as_dict(doc.get("response"))
            if isinstance(response.get("usage"), dict) and response["usage"]:
                f.usage = response["usage"]
                f.usage_where = kind
            finish = finish_of(response, kind)
            f.finish_reasons = [finish]
            if finish == "failed":
                f.errors.append(f"{kind}: {error_message(response.get('error'))}")
        elif kind == "error":
            self.ended_by = kind
            f.errors.append(error_message(doc))
        return False

    def _call(self, item_id: Any) -> ToolCallSeen:
        key = item_id if isinstance(item_id, str) else "?"
        call = self.calls.get(key)
        if call is None:
            call = self.calls[key] = ToolCallSeen(None, None, "")
            self.f.tool_calls.append(call)
        return call

    def judge(self) -> None:
        if not self.judge_frames():
            return
        f = self.f
        p = f.problems
        if self.untyped:
            p.append(f"{self.untyped} event(s) carry no JSON `type`: SDKs dispatch Responses events on it")
        if self.misnamed:
            p.append(
                f"an `event: {self.misnamed[0]}` line names another type than its JSON "
                f"`type` {self.misnamed[1]!r}: clients that dispatch on the event name "
                "misread it"
            )
        if self.seq_missing:
            p.append(
                f"{self.seq_missing} event(s) carry no `sequence_number`: clients cannot "
                "tell a lost or reordered event"
            )
        for before, after in self.seq_breaks[:3]:
            p.append(
                f"`sequence_number` goes from {before} to {after}: events were lost, "
                "repeated or reordered between the gateway and you"
            )
        if self.first_kind not in (None, "response.created"):
            p.append(
                f"the first event is {self.first_kind!r}, not 'response.created': clients "
                "learn the response id from it"
            )
        if len(f.ids) > 1:
            p.append(
                f"the events name {len(f.ids)} different response ids "
                f"({', '.join(f.ids[:3])}): one response must keep one id"
            )
        for message in f.errors[:3]:
            p.append(
                f"the stream reported a failure ({message}): the generation failed on the "
                "gateway; look up this request's trace ID in its logs"
            )
        if self.ended_by is None:
            p.append(
                "the stream ended without `response.completed` (or `.incomplete`, "
                "`.failed`): the answer is cut off; the gateway must end every response "
                "stream with its terminal event"
            )
        elif not f.errors:
            open_items = [i for i in self.added if i not in self.item_done]
            if open_items:
                p.append(
                    f"output item(s) {', '.join(open_items[:3])} were added but never "
                    "finished (no `response.output_item.done`): the gateway drops the "
                    "`.done` events; SDKs that build the output from them lose it"
                )
        if self.after_end:
            p.append(
                f"{self.after_end} event(s) came after {self.ended_by}: clients stop "
                "reading at the terminal event and never see them"
            )
