"""`evidence-to-case` on evidence that is long, malformed or hostile.

A 14 KB evidence file can stand for a million frames: the command rebuilt every frame as a
parsed object and joined the body in memory (1M frames: 1.65 GB and 25 s, a 37 MB case and a
99 MB body; 3M: a segfault under a 2.5 GB address-space limit). Malformed evidence (a list at
the top, a missing field, an int where a name goes, a placeholder of 10^11 characters, JSON
nested 100,000 deep) ended in a traceback, a MemoryError or a RecursionError. Two trace IDs
that differ only in punctuation (`inc/1`, `inc:1`) got one case name and the second silently
overwrote the first. Now frames are generated one at a time, the evidence is checked before
anything is built from it, a stream above `--max-frames` is refused, bad input gets one line
and exit 2, and an existing case is kept unless `--force`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis_budget import budget

from sse_audit_proxy.cli.main import main

BASE: dict[str, Any] = json.loads(
    (pathlib.Path(__file__).parent.parent / "data" / "evidence_tool_call.json").read_text()
)


def long_stream(frames: int) -> dict[str, Any]:
    """The base evidence, its content frames repeated to `frames` in all (as the timeline
    groups them past its exact part)."""
    doc = copy.deepcopy(BASE)
    rows = doc["timeline"]["rows"]
    exact, tail = rows[:-3], rows[-3:]
    grouped = frames - len(exact) - len(tail)
    doc["timeline"] = {
        "frames": frames,
        "exact_frames": len(exact),
        "stride": 1024,
        "rows": [*exact, [100.0, "content", grouped, 900.0, 1.0], *tail],
    }
    for skeleton in doc["frames"]:  # the tail's own skeletons keep their frames' numbers
        if skeleton["n"] > len(exact):
            skeleton["n"] += grouped
    doc["stream"].update(frames=frames, content_frames=frames - 3)
    return doc


def run_cli(tmp_path: pathlib.Path, doc: Any, *flags: str, name: str = "e.json") -> int:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return main(["evidence-to-case", str(path), "--out", str(tmp_path / "conformance"), *flags])


def one_line_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sse-audit-proxy: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_a_stream_longer_than_max_frames_is_refused_in_one_line(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(tmp_path, long_stream(1_000_000)) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "1,000,000 frames" in line and "--max-frames 100,000" in line
    assert not (tmp_path / "conformance").exists()  # nothing written


def test_a_long_stream_is_rebuilt_in_bounded_memory(tmp_path: pathlib.Path) -> None:
    """200,000 frames, allowed by --max-frames: the old code held each as a parsed dict
    (~330 MB here); now the peak stays near the interpreter's own size."""
    frames = 200_000
    (tmp_path / "e.json").write_text(json.dumps(long_stream(frames)))
    out = tmp_path / "conformance"
    script = (
        "import sys\n"
        "from sse_audit_proxy.cli.main import main\n"
        f"rc = main(['evidence-to-case', {str(tmp_path / 'e.json')!r}, '--out', {str(out)!r},"
        f" '--name', 'long', '--max-frames', '{frames}'])\n"
        # VmHWM, not getrusage: ru_maxrss survives exec, so it would report pytest's own size
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    peak_kib = int(done.stdout.split()[-1])
    assert "(reproduced)" in done.stdout
    assert peak_kib < 150_000, f"peak RSS {peak_kib} KiB"
    body = (out / "streams" / "long.sse").read_bytes()
    assert body.count(b"\n\n") == frames
    case = json.loads((out / "cases" / "long.json").read_text())
    assert sum(n for _, n in case["timed"]) == len(body)


def _deep() -> str:
    return "[" * 100_000 + "]" * 100_000


def _with(change: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    change(doc)
    return doc


def _skeletons(skeleton: dict[str, Any]) -> Any:
    return lambda d: [f.__setitem__("skeleton", skeleton) for f in d["frames"]]


MALFORMED: dict[str, Any] = {
    "a list": [],
    "null": None,
    "a string": "x",
    "nested 100,000 deep": _deep(),
    "no request": _with(lambda d: d.pop("request")),
    "stream a list": _with(lambda d: d.__setitem__("stream", [])),
    "no stream.end": _with(lambda d: d["stream"].pop("end")),
    "a bad stream.end": _with(lambda d: d["stream"].__setitem__("end", "nope")),
    "timeline a string": _with(lambda d: d.__setitem__("timeline", "x")),
    "no rows": _with(lambda d: d["timeline"].pop("rows")),
    "a short row": _with(lambda d: d["timeline"].__setitem__("rows", [[1]])),
    "a row's kind an int": _with(lambda d: d["timeline"].__setitem__("rows", [[1, 5]])),
    "a group of 10**12": _with(lambda d: d["timeline"].__setitem__("rows", [[1, "content", 10**12, 5, 0]])),
    "a negative group": _with(lambda d: d["timeline"].__setitem__("rows", [[1, "content", -5, 5, 0]])),
    "frames an object": _with(lambda d: d.__setitem__("frames", {"a": 1})),
    "a skeleton a string": _with(lambda d: [f.__setitem__("skeleton", "x") for f in d["frames"]]),
    "a placeholder of 10**11": _with(_skeletons({"bytes": 5, "data": {"a": "<99999999999>"}})),
    "raw bytes of 10**11": _with(_skeletons({"bytes": 10**11, "raw": True})),
    "raw bytes a string": _with(_skeletons({"bytes": "x", "raw": True})),
    "an event an int": _with(_skeletons({"bytes": 5, "event": 5, "data": {}})),
    "an event with a line feed": _with(_skeletons({"bytes": 5, "event": "a\ndata: [DONE]", "data": {}})),
    "a one-item header": _with(lambda d: d["response"].__setitem__("headers", [["Content-Type"]])),
    "a path an int": _with(lambda d: d["request"].__setitem__("path", 5)),
    "anomalies an int": _with(lambda d: d["stream"].__setitem__("anomalies", 5)),
    "a skeleton 1000 deep": _with(_skeletons({"bytes": 5, "data": json.loads("[" * 900 + "]" * 900)})),
    "a type with a quote and a line feed": _with(
        _skeletons({"bytes": 5000, "raw": True, "unread": True, "type": 'a"}\n\ndata: [DONE]'})
    ),
    "thresholds a list": _with(lambda d: d.__setitem__("thresholds", [])),
    "an unknown threshold": _with(lambda d: d.__setitem__("thresholds", {"nope": 1})),
    "a negative threshold": _with(lambda d: d.__setitem__("thresholds", {"max_frame_bytes": -1})),
    "a threshold a string": _with(lambda d: d.__setitem__("thresholds", {"buffered_max_gap": "x"})),
    # What serve refuses (a third pass): 0 and 2**62 bytes, NaN and infinite seconds
    "a frame cap of 0": _with(lambda d: d.__setitem__("thresholds", {"max_frame_bytes": 0})),
    "a frame cap of 2**62": _with(lambda d: d.__setitem__("thresholds", {"max_frame_bytes": 2**62})),
    "a NaN threshold": _with(lambda d: d.__setitem__("thresholds", {"buffered_max_gap": float("nan")})),
    "an infinite threshold": _with(
        lambda d: d.__setitem__("thresholds", {"bursty_min_silence": float("inf")})
    ),
    "a float for an int": _with(lambda d: d.__setitem__("thresholds", {"bursty_min_clump": 2.5})),
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_malformed_evidence_gets_one_line_and_exit_2(
    what: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = MALFORMED[what]
    assert run_cli(tmp_path, doc if what != "nested 100,000 deep" else _deep()) == 2
    one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "conformance").exists()


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*at, i))
    return out


PATHS = _paths(BASE)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(
        ["<3>", "<99999999999>", "content", "content+finish", "upstream_eof", "[DONE]", "a\nb"]
    ),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _mutate(doc: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    holder = doc
    for step in path[:-1]:
        holder = holder[step]
    if delete and isinstance(holder, dict):
        holder.pop(path[-1])
    else:
        holder[path[-1]] = value
    return doc


@budget(300)
@given(st.lists(st.tuples(st.sampled_from(PATHS), JSON_VALUES, st.booleans()), min_size=1, max_size=3))
def test_mutated_evidence_never_ends_in_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, mutations: list[tuple[tuple[Any, ...], Any, bool]]
) -> None:
    doc: Any = copy.deepcopy(BASE)
    for path, value, delete in mutations:
        try:
            doc = _mutate(doc, path, value, delete)
        except (KeyError, IndexError, TypeError):  # an earlier mutation took the path away
            continue
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "e.json").write_text(json.dumps(doc))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["evidence-to-case", str(tmp / "e.json"), "--out", str(tmp / "c"), "--max-frames", "5000"])
    assert rc in (0, 1, 2)
    if rc == 2:
        one_line_error(err.getvalue())


def test_a_case_is_not_overwritten_without_force(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`inc/1` and `inc:1` both name the case incident_inc_1: the second is refused."""
    first = _with(lambda d: d.__setitem__("trace_id", "inc/1"))
    second = _with(lambda d: d.__setitem__("trace_id", "inc:1"))
    assert run_cli(tmp_path, first) == 0
    case = tmp_path / "conformance" / "cases" / "incident_inc_1.json"
    written = case.read_text()
    capsys.readouterr()
    assert run_cli(tmp_path, second) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "incident_inc_1.json exists" in line and "--force" in line
    assert case.read_text() == written  # the first incident's case is intact
    assert run_cli(tmp_path, second, "--force") == 0
    assert "inc:1" in json.loads(case.read_text())["about"]


def test_a_given_name_is_sanitised_like_a_default_one(tmp_path: pathlib.Path) -> None:
    assert run_cli(tmp_path, BASE, "--name", "../../escaped/name") == 0
    conformance = tmp_path / "conformance"
    assert sorted(p.name for p in (conformance / "cases").iterdir()) == ["_escaped_name.json"]
    assert sorted(p.name for p in (conformance / "streams").iterdir()) == ["_escaped_name.sse"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conformance", "e.json"]
