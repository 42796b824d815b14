"""The request scan takes its parse events in one loop per batch: it learns what the plain
one-call-per-event definition learns (the wanted values, the shape's fields in order, the
lists), for any JSON body, hostile keys included (dots, duplicates, too many fields)."""

from __future__ import annotations

import json
from typing import Any

import ijson
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.core import request_info as ri


def reference_take(
    shape: ri._Shape, found: dict[str, object], prefix: str, event: str, value: object
) -> None:
    """The definition, one call per parse event (as request_info.py had it before)."""
    fields = shape.fields
    if not prefix:
        if event == "start_map":
            shape.depth += 1
        elif event == "end_map":
            shape.depth -= 1
        elif event == "map_key" and shape.depth == 1 and isinstance(value, str):
            shape.top = value
            if value == "stream_options":
                if shape.options:  # a repeated key: the last counts
                    found.pop("stream_options.include_usage", None)
                    for key in [k for k in fields if k.startswith("stream_options.")]:
                        del fields[key]
                shape.options = True
            if len(fields) < ri.MAX_SHAPE_FIELDS and ri._FIELD.fullmatch(value):
                fields.setdefault(value, None)
        return
    name, _, rest = prefix.partition(".")
    if prefix in ri._WANTED and name == shape.top:  # not a top-level key spelled with a dot
        found[prefix] = value
    if name != shape.top or name not in fields:
        return
    if prefix == name:
        if event == "start_array":
            shape.lists.add(name)
            fields[name] = 0
        elif event in ("number", "boolean"):
            fields[name] = ri._scalar(value)
    elif rest == "item" and name in shape.lists and event in ri._ITEM_STARTS:
        fields[name] = int(fields[name] or 0) + 1
    elif (
        name == "stream_options"
        and "." not in rest
        and event in ("number", "boolean")
        and len(fields) < ri.MAX_SHAPE_FIELDS
        and ri._FIELD.fullmatch(rest)
    ):
        fields[f"{name}.{rest}"] = ri._scalar(value)


_KEYS = st.sampled_from(
    [
        "model",
        "stream",
        "stream_options",
        "include_usage",
        "messages",
        "item",
        "a.",
        "stream_options.include_usage",
        "messages.item",
        "x.y.z",
        "n",
        "a b",
        "é",
        "",  # its object's keys come at prefix "", as the body's do
        "é" * 600,  # longer than STRING_KEEP in UTF-8: the scan reads it as ""
    ]
) | st.text(alphabet="abx.", min_size=1, max_size=4)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4)
)
_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=25,
)


def _body(pairs: list[tuple[str, Any]]) -> bytes:
    # Built as text so that a key may repeat (a dict would keep one).
    return b"{" + b",".join(orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in pairs) + b"}"


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_KEYS, _JSON), max_size=40))
def test_batched_take_learns_what_one_call_per_event_learns(pairs: list[tuple[str, Any]]) -> None:
    events = list(ijson.parse(_body(pairs), use_float=False))
    expected, expected_found = ri._Shape(), {}
    for prefix, event, value in events:
        reference_take(expected, expected_found, prefix, event, value)
    shape, found = ri._Shape(), {}
    cut = len(events) // 2  # in two batches, as reads split a body
    shape.take(events[:cut], found)
    shape.take(events[cut:], found)
    assert list(shape.fields.items()) == list(expected.fields.items())
    assert shape.lists == expected.lists
    assert found == expected_found


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_KEYS, _JSON | st.just({"include_usage": True})), max_size=12), st.integers(1, 40))
def test_the_wanted_values_are_a_python_upstreams(pairs: list[tuple[str, Any]], step: int) -> None:
    """`stream` and `stream_options.include_usage` as json.loads reads the body, as a Python
    gateway does: a repeated key's last value, a key spelled with dots only itself. (A body
    with `stream_options` twice, the last without include_usage, once read as asking for
    usage, and so had its stream judged `missing_usage`.)"""
    body = _body(pairs)
    doc = json.loads(body)
    options = doc.get("stream_options")
    usage = isinstance(options, dict) and options.get("include_usage") is True
    whole, pieces = ri.BodyScanner(), ri.BodyScanner()
    whole.feed_whole([body])
    for i in range(0, len(body), step):
        pieces.feed(body[i : i + step])
    for info in (whole.info(), pieces.info()):
        assert (info.stream, info.include_usage) == (doc.get("stream") is True, usage)


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"m","stream":true,"stream_options":{"include_usage":true},"stream_options":{}}',
        b'{"model":"m","stream":true,"stream_options":{"include_usage":true},"stream_options":null}',
        b'{"model":"m","stream":true,"stream_options.include_usage":true}',
        b'{"stream_options":{"include_usage":true},"model":"m","stream":true,"stream_options":{"x":1}}',
    ],
)
def test_usage_not_asked_for_in_the_last_word(body: bytes) -> None:
    whole, streamed = ri.BodyScanner(), ri.BodyScanner()
    whole.feed_whole([body])
    streamed.feed(body)
    for info in (whole.info(), streamed.info()):
        assert info.model == "m" and info.stream and not info.include_usage
        assert orjson.loads(info.shape).get("stream_options.include_usage") is not True


@pytest.mark.parametrize(
    "number", [b"1e99999999999999999999", b"-1E+99999999999999999999", b"1e-99999999999999999999"]
)
def test_a_number_no_decimal_holds_ends_the_scan_as_unreadable_not_as_a_defect(number: bytes) -> None:
    # Valid JSON (Python's json reads inf): it was reported as a defect of the proxy's own.
    defects: list[Exception] = []
    scanner = ri.BodyScanner(on_error=defects.append)
    scanner.feed(b'{"model":"gpt-4o","stream":true,"temperature":%s}' % number)
    assert defects == []
