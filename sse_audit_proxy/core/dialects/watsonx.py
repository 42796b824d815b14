"""IBM watsonx.ai's chat stream (`…/ml/v1/text/chat_stream`, a deployment's
`…/ml/v1/deployments/{id}/text/chat_stream`).

Chat chunks (with watsonx's `model_id` and `created_at` beside OpenAI's fields), each in an
event with an `id:` and `event: message` line, the last chunk `choices: []` with the `usage`;
there is no `[DONE]`: each choice's `finish_reason` (`stop`, `length`, `tool_calls`,
`time_limit`, `cancelled`, `error`) is its end. A failure is an `event: error`, on which the
ibm-watsonx-ai SDK (and its Java and Node SDKs) raise. The SDK hands on a stream that ends
before the finish reason as the whole answer; here it is `truncated`, where a route with no
dialect said `complete`. The path asks for the stream (the body has no `stream`), and the body
names its model `model_id`, which the record does not read (`unknown`).
"""

from __future__ import annotations

from sse_audit_proxy.core.dialects.base import DialectSummary
from sse_audit_proxy.core.dialects.chat import ChatCompletions


class WatsonxChat(ChatCompletions):
    route = "watsonx_chat"
    path_suffixes = ("/text/chat_stream",)
    path_pattern = None
    evidence_path = "/ml/v1/text/chat_stream?version=2025-02-11"
    expects_done = False  # watsonx sends none
    end_marker = "finish_reason for each choice"
    empty_event_raises = False  # the SDKs skip an event with no data

    __slots__ = ()

    @classmethod
    def loses_to_bom(cls, line: bytes) -> bool:
        return False  # not known of ibm-watsonx-ai's reader: not judged

    @classmethod
    def target_info(cls, target: str) -> tuple[str | None, bool]:
        return None, True

    def summary(self) -> DialectSummary:
        summary = super().summary()
        # Every choice's finish reason is the end (Chat's is `[DONE]`).
        summary.terminal = summary.terminal or not summary.missing_finish_reason
        return summary
