"""What the demo gateway answers: a deterministic completion planned from the request.

Pure: the same request gives the same text, tool call and usage whether it is streamed or
not, so a client can compare the streamed usage chunk with the non-streamed answer. The seed
is taken from the conversation (and the request's own `seed`), never from the model name,
so every scenario answers the same prompt with the same words.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

import orjson

from sse_audit_proxy.tools.scenarios import TOOL

DEFAULT_TOOL: dict[str, Any] = TOOL
MIN_TOKENS, MAX_TOKENS = 20, 60  # completion length when neither request nor header says
_HARD_CAP = 100_000  # tokens one answer may have, whatever the request asks

_WORDS = (
    "the",
    "gateway",
    "stream",
    "token",
    "route",
    "canary",
    "proxy",
    "latency",
    "budget",
    "request",
    "response",
    "client",
    "server",
    "model",
    "prompt",
    "answer",
    "chunk",
    "frame",
    "usage",
    "trace",
    "metric",
    "alert",
    "dashboard",
    "operator",
    "cutover",
    "rollout",
    "traffic",
    "signal",
    "buffer",
    "socket",
    "header",
    "event",
    "cluster",
    "region",
    "replica",
    "queue",
    "worker",
    "shard",
    "cache",
    "naïve",
    "café",
    "resilient",
    "steady",
    "careful",
    "quick",
    "gentle",
    "quiet",
    "bright",
    "clear",
    "honest",
    "simple",
    "small",
    "early",
    "late",
    "first",
    "last",
    "every",
    "each",
    "other",
    "whole",
    "sends",
    "carries",
    "measures",
    "reports",
    "watches",
    "holds",
    "waits",
    "returns",
    "keeps",
    "finds",
    "checks",
    "between",
    "through",
    "before",
    "after",
    "under",
    "over",
    "while",
    "because",
    "so",
    "and",
    "but",
    "with",
    "without",
)
_CITIES = ("Paris", "Lisbon", "Kyoto", "Nairobi", "Montréal", "Oslo", "Lima", "Hanoi")


class BadRequest(ValueError):
    """The request cannot be answered: becomes a 400 with an OpenAI-shaped error."""


@dataclass(slots=True, frozen=True)
class Prompt:
    """The parts of a request that decide the answer."""

    text: str  # the conversation, flattened: seeds the answer and sizes prompt_tokens
    messages: int
    tools: tuple[tuple[str, Any], ...]  # (name, JSON schema of the parameters)
    forced_tool: str | None  # tool_choice naming one function
    tools_allowed: bool  # tool_choice is not "none"
    after_tool: bool  # the last input is a tool result: answer it with text
    max_tokens: int | None
    seed: int


@dataclass(slots=True, frozen=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str
    fragments: tuple[str, ...]  # `arguments`, cut as a model streams it


@dataclass(slots=True, frozen=True)
class Plan:
    tokens: tuple[str, ...]  # the text, one piece per content frame
    tool_call: ToolCall | None
    finish_reason: str  # stop | length | tool_calls
    prompt_tokens: int
    completion_tokens: int
    seed: int

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def content_frames(self) -> int:
        return len(self.tool_call.fragments) if self.tool_call else len(self.tokens)

    def usage(self, extra_completion: int = 0) -> dict[str, Any]:
        """Chat/Completions usage; `extra_completion` miscounts on purpose (usage-mismatch)."""
        completion = self.completion_tokens + extra_completion
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    def responses_usage(self, extra_completion: int = 0) -> dict[str, Any]:
        completion = self.completion_tokens + extra_completion
        return {
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.prompt_tokens + completion,
        }


# Reading requests --------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """Message content as text: a string, or a list of parts with `text`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return "" if content is None else orjson.dumps(content).decode()


def _max_tokens(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BadRequest(f"`{name}` must be a positive integer")
        return value
    return None


def _seed(text: str, body: dict[str, Any]) -> int:
    digest = hashlib.blake2b(text.encode(), digest_size=8)
    seed = body.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        digest.update(seed.to_bytes(16, "little", signed=True))
    return int.from_bytes(digest.digest(), "little")


def _tool_choice(body: dict[str, Any]) -> tuple[str | None, bool]:
    choice = body.get("tool_choice")
    if choice == "none":
        return None, False
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        if isinstance(name, str):
            return name, True
    return None, True


def _prompt(
    body: dict[str, Any],
    parts: list[str],
    messages: int,
    tools: list[tuple[str, Any]],
    after_tool: bool,
    max_tokens: int | None,
) -> Prompt:
    if tools:
        parts.append(orjson.dumps([[n, p] for n, p in tools]).decode())
    text = "\n".join(parts)
    forced, allowed = _tool_choice(body)
    return Prompt(text, messages, tuple(tools), forced, allowed, after_tool, max_tokens, _seed(text, body))


def chat_prompt(body: dict[str, Any]) -> Prompt:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("`messages` must be a non-empty array")
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("each message must be an object")
        parts.append(f"{message.get('role')}: {_text_of(message.get('content'))}")
    tools = []
    for tool in body.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            tools.append((function["name"], function.get("parameters")))
    last = messages[-1]
    return _prompt(
        body,
        parts,
        len(messages),
        tools,
        last.get("role") == "tool",
        _max_tokens(body, "max_completion_tokens", "max_tokens"),
    )


def responses_prompt(body: dict[str, Any]) -> Prompt:
    given = body.get("input")
    if isinstance(given, str):
        items: list[Any] = [{"role": "user", "content": given}]
    elif isinstance(given, list) and given:
        items = given
    else:
        raise BadRequest("`input` must be a string or a non-empty array")
    parts = []
    if isinstance(body.get("instructions"), str):
        parts.append(f"system: {body['instructions']}")
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest("each input item must be an object")
        if item.get("type") == "function_call_output":
            parts.append(f"tool: {_text_of(item.get('output'))}")
        elif item.get("type") == "function_call":
            parts.append(f"assistant: {item.get('name')}({item.get('arguments')})")
        else:
            parts.append(f"{item.get('role')}: {_text_of(item.get('content'))}")
    tools = [
        (tool["name"], tool.get("parameters"))
        for tool in body.get("tools") or ()
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("name"), str)
    ]
    after_tool = items[-1].get("type") == "function_call_output"
    return _prompt(body, parts, len(items), tools, after_tool, _max_tokens(body, "max_output_tokens"))


def completions_prompt(body: dict[str, Any]) -> Prompt:
    given = body.get("prompt")
    if isinstance(given, list) and all(isinstance(p, str) for p in given):
        given = "\n".join(given)
    if not isinstance(given, str):
        raise BadRequest("`prompt` must be a string or an array of strings")
    return _prompt(body, [given], 1, [], False, _max_tokens(body, "max_tokens"))


# Planning the answer -----------------------------------------------------------------------


def _approx_tokens(text: str) -> int:
    return max(1, (len(text.encode()) + 3) // 4)


def _words(rng: random.Random, n: int) -> list[str]:
    """n text pieces reading like sentences: words with a leading space, and full stops."""
    out: list[str] = []
    sentence = 0
    for _ in range(n):
        if sentence >= 6 and rng.random() < 0.2:
            out.append(".")
            sentence = 0
            continue
        word = rng.choice(_WORDS)
        if sentence == 0:
            word = word.capitalize()
        out.append(word if not out else " " + word)
        sentence += 1
    return out


def _value(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """A plausible value for a JSON schema, drawn from rng."""
    if not isinstance(schema, dict):
        return rng.choice(_CITIES)
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "integer":
        return rng.randint(1, 100)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        return [_value(schema.get("items"), rng, depth + 1)] if depth < 3 else []
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        if not isinstance(props, dict) or depth >= 3:
            return {}
        return {key: _value(sub, rng, depth + 1) for key, sub in props.items()}
    return rng.choice(_CITIES)


def _fragments(arguments: str, rng: random.Random) -> tuple[str, ...]:
    out = []
    i = 0
    while i < len(arguments):
        step = rng.randint(2, 8)
        out.append(arguments[i : i + step])
        i += step
    return tuple(out) or ("",)


def _tool_call(prompt: Prompt, rng: random.Random, *, valid: bool) -> ToolCall:
    tools = prompt.tools or ((DEFAULT_TOOL["name"], DEFAULT_TOOL["parameters"]),)
    chosen = next((t for t in tools if t[0] == prompt.forced_tool), None)
    name, schema = chosen or tools[prompt.seed % len(tools)]
    value = _value(schema if schema else {"type": "object", "properties": {}}, rng)
    arguments = orjson.dumps(value if isinstance(value, dict) else {"value": value}).decode()
    if not valid:
        arguments = arguments[:-2] if len(arguments) > 2 else '{"'  # the closing part is lost
    call_id = "call_" + hashlib.blake2b(prompt.text.encode(), digest_size=12).hexdigest()
    return ToolCall(call_id, name, arguments, _fragments(arguments, rng))


def plan(
    prompt: Prompt, *, frames: int | None = None, call_tool: bool = False, valid_tool_args: bool = True
) -> Plan:
    """The answer to `prompt`. `frames` fixes the number of text tokens; `call_tool` forces
    a tool call (the tool scenarios) even when the request offers no tools."""
    rng = random.Random(prompt.seed)
    prompt_tokens = 3 + 4 * prompt.messages + _approx_tokens(prompt.text)
    wants_tool = (call_tool or bool(prompt.tools)) and prompt.tools_allowed
    if wants_tool and not prompt.after_tool:
        call = _tool_call(prompt, rng, valid=valid_tool_args)
        return Plan(
            (),
            call,
            "tool_calls",
            prompt_tokens,
            len(call.fragments) + _approx_tokens(call.name),
            prompt.seed,
        )
    n = frames if frames is not None else rng.randint(MIN_TOKENS, MAX_TOKENS)
    n = min(n, _HARD_CAP)
    finish = "stop"
    if prompt.max_tokens is not None and prompt.max_tokens < n:
        n, finish = prompt.max_tokens, "length"
    tokens = tuple(_words(rng, n))
    return Plan(tokens, None, finish, prompt_tokens, n, prompt.seed)
