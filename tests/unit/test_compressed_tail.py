"""A compressed answer whose last read decodes to more than a feed's bound is read to its end.

Each feed decodes at most FEED_MAX_OUT (256 KiB) and leaves the rest waiting for the next read;
after the last read none came, so a gateway that buffered a long answer and sent it gzipped in
one write had its tail never read: `[DONE]`, the finish reason and usage were lost, and a
truncated answer was `complete` (outside review: 1,200 tokens, 43x, the body on one read).
"""

from __future__ import annotations

import gzip
import random

import brotli
import orjson
import pytest

from sse_audit_proxy.core.audit import FINISH_FEEDS, End, Outcome, StreamAudit, StreamResult
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.inflate import FEED_MAX_OUT, Inflater

COMPRESS = {"gzip": lambda b: gzip.compress(b, 6), "br": lambda b: brotli.compress(b, quality=5)}


def chat_body(tokens: int, *, done: bool = True, seed: int = 7) -> bytes:
    rnd = random.Random(seed)

    def frame(doc: object) -> bytes:
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o"}
    words = ["".join(rnd.choice("abcdefghij") for _ in range(rnd.randint(2, 8))) for _ in range(500)]
    out = [
        frame({**head, "choices": [{"index": 0, "delta": {"content": " " + w}}]})
        for w in rnd.choices(words, k=tokens)
    ]
    out.append(frame({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    out.append(frame({**head, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": tokens}}))
    if done:
        out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def one_read(body: bytes, encoding: str) -> StreamResult:
    audit = StreamAudit(ChatCompletions(), 0.0, include_usage=True, content_encoding=encoding)
    audit.feed(COMPRESS[encoding](body), 0.5)  # the whole answer, buffered, in one read
    return audit.finish(0.6, End.UPSTREAM_EOF)


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_a_whole_compressed_answer_in_one_read_is_read_to_its_end(encoding: str) -> None:
    body = chat_body(5000)
    assert len(body) > 2 * FEED_MAX_OUT
    r = one_read(body, encoding)
    assert (r.outcome, r.anomalies) == (Outcome.COMPLETE, ["buffered"])
    assert r.done and r.finish_reasons == ["stop"] and r.completion_tokens == 5000
    assert r.frames == 5003


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_a_whole_compressed_answer_without_done_is_truncated(encoding: str) -> None:
    r = one_read(chat_body(5000, done=False), encoding)
    assert r.outcome is Outcome.TRUNCATED and "missing_done" in r.anomalies
    assert r.finish_reasons == ["stop"] and r.completion_tokens == 5000


def test_a_tail_past_what_finish_decodes_is_judged_on_the_connection() -> None:
    """What finish() leaves (a catch-up cut short by a client that left with the whole body)
    is unread, not a bomb: the connection's clean end is the stream's (third review)."""
    tokens = FINISH_FEEDS * FEED_MAX_OUT // 60  # past the bound: a Chat frame is under 100 bytes
    body = chat_body(tokens)
    assert len(body) > (FINISH_FEEDS + 1) * FEED_MAX_OUT
    r = one_read(body, "gzip")
    assert r.outcome is Outcome.COMPLETE and "compression_bomb" not in r.anomalies
    assert "missing_done" not in r.anomalies and not r.done  # not judged on what was not read


def test_a_tail_the_caller_gives_up_on_is_a_compression_bomb() -> None:
    audit = StreamAudit(ChatCompletions(), 0.0, include_usage=True, content_encoding="gzip")
    audit.feed(gzip.compress(chat_body(40_000), 6), 0.5)
    assert audit.catch_up() and audit.tail_waiting
    audit.give_up_tail()  # the proxy's CATCH_UP_FEEDS ran out
    r = audit.finish(0.6, End.UPSTREAM_EOF)
    assert r.outcome is Outcome.COMPLETE and "compression_bomb" in r.anomalies


def test_time_spent_decoding_the_tail_is_not_the_upstream_holding_the_body() -> None:
    """Frames decoded late are timed at the last read, the end after the decoding: 14 answers
    at once were each `held_open` by the proxy's own catch-up (third review)."""
    audit = StreamAudit(ChatCompletions(), 0.0, content_encoding="gzip")
    audit.feed(gzip.compress(chat_body(5000), 6), 0.5)
    while audit.catch_up():
        pass
    audit.decoded_late(1.5)  # what the catch-up took, with other streams' turns between
    r = audit.finish(2.01, End.UPSTREAM_EOF)
    assert "held_open" not in r.anomalies and r.quiet_at_end is not None and r.quiet_at_end < 0.02


def test_drain_decodes_a_feeds_worth_at_a_time_until_nothing_waits() -> None:
    body = chat_body(4000)
    inflater = Inflater("gzip", 1 << 20)
    out = [b"".join(inflater.feed(gzip.compress(body)))]
    assert len(out[0]) == FEED_MAX_OUT and inflater.behind
    while inflater.behind:
        piece = b"".join(inflater.drain())
        assert 0 < len(piece) <= FEED_MAX_OUT
        out.append(piece)
    assert b"".join(out) == body and not inflater.bomb
    assert not b"".join(inflater.drain())  # nothing left: a drain gives nothing


def test_giving_up_on_what_waits_is_a_bomb_and_frees_the_decoder() -> None:
    inflater = Inflater("gzip", 1 << 20)
    assert b"".join(inflater.feed(gzip.compress(chat_body(4000))))
    inflater.give_up()
    assert inflater.bomb and not inflater.behind
    assert not b"".join(inflater.drain())


def test_catch_up_decodes_a_feeds_worth_a_call_before_finish() -> None:
    """The proxy spreads the tail over loop turns: decoded in finish() in one go, a hostile body
    held every other stream up for 0.87 s (second review)."""
    body = chat_body(40_000)  # about 5 MiB: past what finish() decodes itself
    audit = StreamAudit(ChatCompletions(), 0.0, include_usage=True, content_encoding="gzip")
    audit.feed(gzip.compress(body, 6), 0.5)
    calls = 1
    while audit.catch_up():
        calls += 1
    assert calls == -(-len(body) // FEED_MAX_OUT) - 1  # the read's own feed, then one a call
    assert not audit.catch_up()  # nothing left
    r = audit.finish(0.6, End.UPSTREAM_EOF)
    assert r.done and r.completion_tokens == 40_000 and "compression_bomb" not in r.anomalies
