"""Chat Completions as the probe sees it: the requests it sends and how it reads the answers.

Pure: bodies out, parsed JSON or decoded events in. Every framing fault found is phrased for
the operator: what is wrong and what it breaks.
"""

from __future__ import annotations

from typing import Any

import orjson

from sse_audit_proxy.core.dialects.base import DONE_SENTINEL
from sse_audit_proxy.core.sse import Event
from sse_audit_proxy.tools.probe.api import Api
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
from sse_audit_proxy.tools.probe.prompts import MAX_TOKENS, SEED, TOOL, TOOL_RESULT, WEATHER

CHUNK = "chat.completion.chunk"


class ChatApi(Api):
    name = "chat"
    title = "Chat Completions"
    path = "chat/completions"
    answer_object = "chat.completion"
    usage_keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    usage_request = "stream_options.include_usage"
    tools = ({"type": "function", "function": TOOL},)

    def is_terminal(self, event: Event) -> bool:
        return event.data == DONE_SENTINEL

    # Requests ---------------------------------------------------------------------------

    def body(
        self, model: str, prompt: str | list[Any], *, stream: bool, max_tokens: int = MAX_TOKENS, **extra: Any
    ) -> dict[str, Any]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "temperature": 0,
            "seed": SEED,
            "max_tokens": max_tokens,
        }
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(extra)
        return body

    def tool_call(self, model: str) -> dict[str, Any]:
        return self.body(
            model,
            WEATHER,
            stream=True,
            tools=self.tools,
            tool_choice={"type": "function", "function": {"name": TOOL["name"]}},
        )

    def tool_result(self, model: str, call: ToolCallSeen) -> dict[str, Any]:
        body = self.body(model, WEATHER, stream=True, tools=self.tools, tool_choice="auto")
        body["messages"] += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.call_id, "content": TOOL_RESULT},
        ]
        return body

    # Reading ----------------------------------------------------------------------------

    def read_completion(self, doc: dict[str, Any], a: Answer) -> None:
        choices = doc.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            a.problems.append("the answer has no `choices`: there is no completion in it")
            return
        choice = choices[0]
        a.finish = as_str(choice.get("finish_reason")) or None
        message = as_dict(choice.get("message"))
        a.text = as_str(message.get("content")) or ""
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict):
                fn = as_dict(call.get("function"))
                a.tool_calls.append(
                    ToolCallSeen(
                        as_str(call.get("id")), as_str(fn.get("name")), as_str(fn.get("arguments")) or ""
                    )
                )

    def read_stream(self, events: list[TimedEvent]) -> StreamFacts:
        f = StreamFacts()
        reader = _ChatStream(f)
        for t, event in events:
            reader.frame(t, event.data)
        reader.judge()
        return f


class _ChatStream(StreamReader):
    def __init__(self, facts: StreamFacts) -> None:
        super().__init__(facts)
        self.after_done = 0
        self.chunks = 0
        self.finish: dict[int, str] = {}
        self.choices: set[int] = set()
        self.calls: dict[object, ToolCallSeen] = {}
        self.last_call: dict[int, object] = {}

    def frame(self, t: float, data: bytes) -> None:
        f = self.f
        f.data_frames += 1
        if f.done:
            self.after_done += 1
            return
        if data == DONE_SENTINEL:
            f.done = f.terminal = True
            return
        doc = self.parse(data)
        if doc is None:
            return
        self.chunks += 1
        if "error" in doc:
            f.errors.append(error_message(doc["error"]))
            return
        if doc.get("id") != "" or doc.get("object") != "":
            # (Azure's annotation chunks, its prompt filter's first and its asynchronous
            # filter's, have "" for both: not chunks of the completion, whose id they lack.)
            distinct(f.ids, doc.get("id"))
            distinct(f.objects, doc.get("object"))
            distinct(f.models, doc.get("model"))
        choices = doc.get("choices")
        usage = doc.get("usage")
        if isinstance(usage, dict) and usage:
            f.usage = usage
            where = "with `choices: []`" if choices == [] else "with choices"
            f.usage_where = f"chunk {self.chunks}, {where}"
        if not isinstance(choices, list):
            return
        content = False
        for choice in choices:
            if isinstance(choice, dict):
                content = self._choice(choice) or content
        if content:
            f.content_at.append(t)

    def _choice(self, choice: dict[str, Any]) -> bool:
        index = choice.get("index", 0)
        index = index if isinstance(index, int) else 0
        self.choices.add(index)
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            self.finish[index] = reason
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return False
        content = False
        text = delta.get("content")
        if isinstance(text, str) and text:
            if index == 0:
                self.f.text += text
            content = True
        if any(delta.get(k) for k in ("refusal", "reasoning_content", "reasoning")):
            content = True
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict) and self._tool_call(index, call):
                content = True
        return content

    def _tool_call(self, choice: int, call: dict[str, Any]) -> bool:
        if isinstance(call.get("index"), int):
            key: object = (choice, call["index"])
        elif call.get("id"):
            key = (choice, "id", call["id"])
        else:
            key = self.last_call.get(choice, (choice, 0))
        self.last_call[choice] = key
        seen = self.calls.get(key)
        if seen is None:
            seen = self.calls[key] = ToolCallSeen(None, None, "")
            self.f.tool_calls.append(seen)
        fn = as_dict(call.get("function"))
        seen.call_id = seen.call_id or as_str(call.get("id"))
        seen.name = seen.name or as_str(fn.get("name"))
        arguments = fn.get("arguments")
        if isinstance(arguments, str):
            seen.arguments += arguments
        return bool(arguments or call.get("id") or fn.get("name"))

    def judge(self) -> None:
        if not self.judge_frames():
            return
        f = self.f
        p = f.problems
        for message in f.errors[:3]:
            p.append(
                f"an error frame came mid-stream ({message}): the generation failed on the "
                "gateway; look up this request's trace ID in its logs"
            )
        if f.errors:
            # The failure is the root cause: a failed stream owes no id, finish or `[DONE]`
            # (LiteLLM's carries only its `{"error": ...}` frame).
            return
        if self.chunks and not f.ids:
            p.append("the chunks carry no `id`: clients that key a completion by its id lose it")
        elif len(f.ids) > 1:
            p.append(
                f"the chunks carry {len(f.ids)} different ids ({', '.join(f.ids[:3])}): one "
                "completion must keep one id; clients that group chunks by id split the answer"
            )
        if self.chunks and f.objects != [CHUNK]:
            p.append(
                f"chunk `object` is {', '.join(map(repr, f.objects)) or 'missing'}, not "
                f"{CHUNK!r}: the route does not speak the Chat Completions stream format"
            )
        missing = sorted(i for i in self.choices if i not in self.finish)
        if not self.finish or missing:
            which = f" (choice {', '.join(map(str, missing))})" if self.finish else ""
            p.append(
                f"no `finish_reason` arrived{which}: clients cannot tell a finished answer "
                "from a cut one; the gateway must set it on the last chunk of each choice"
            )
        f.finish_reasons = [self.finish[i] for i in sorted(self.finish)]
        if not f.done:
            whole = bool(self.finish) and not missing
            p.append(
                "the stream ended without `data: [DONE]`"
                + (
                    " after every choice's finish_reason: the openai SDKs stop at the body's end "
                    "and take the answer as whole, but a client that reads until [DONE] cannot "
                    "tell it from a cut, and the proxy records every such stream `truncated`"
                    if whole
                    else ": clients cannot tell it from a cut"
                )
                + "; the gateway must end every stream with [DONE]"
            )
        if self.after_done:
            p.append(
                f"{self.after_done} frame(s) came after `[DONE]`: clients stop reading at "
                "[DONE] and never see them"
            )


def error_message(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code") or error.get("type")
        text = message if isinstance(message, str) else orjson.dumps(error).decode()
        return f"{code}: {text}"[:200] if code else text[:200]
    return str(error)[:200]
