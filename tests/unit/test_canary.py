"""Choosing a side per request, and changing the share at run time (file, SIGHUP, trip)."""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from sse_audit_proxy.core.audit import End, StreamAudit
from sse_audit_proxy.core.dialects.chat import ChatCompletions
from sse_audit_proxy.core.guard import quantile_bound_ranks
from sse_audit_proxy.core.record import AuditRecord
from sse_audit_proxy.server import canary_control
from sse_audit_proxy.server.canary import CanaryConfig, Router, Side, bucket, label_name, parse_percent
from sse_audit_proxy.server.canary_control import CanaryControl, build_router, read_percent_file

BASE, CAN = Side("baseline", "http://b"), Side("canary", "http://c")


def router(percent: float, **kw: str) -> Router:
    r = Router(BASE, CAN, percent, **kw)
    r._random = random.Random(7).random  # a fixed draw sequence
    return r


def test_without_a_canary_every_request_goes_to_the_baseline() -> None:
    r = Router.single("http://gw/")
    assert r.pick({}) == Side("baseline", "http://gw") and r.percent == 0.0


@pytest.mark.parametrize("percent", [0.0, 12.5, 50.0, 100.0])
def test_the_share_sent_to_the_canary_is_the_percent(percent: float) -> None:
    r = router(percent)
    picks = [r.pick({}).name for _ in range(20_000)]
    share = 100.0 * picks.count("canary") / len(picks)
    assert share == pytest.approx(percent, abs=1.0)


def test_a_sticky_header_value_always_gets_the_same_side() -> None:
    r = router(30.0, sticky_header="X-User")
    for user in (f"user-{i}" for i in range(200)):
        sides = {r.pick({"X-User": user}).name for _ in range(5)}
        assert len(sides) == 1
        # The same answer as a fresh router (another process) would give: a stable hash.
        assert sides == {router(30.0, sticky_header="X-User").pick({"X-User": user}).name}
    share = sum(bucket(f"user-{i}") < 30.0 for i in range(10_000)) / 100.0
    assert share == pytest.approx(30.0, abs=1.5)


def test_a_sticky_value_on_the_canary_stays_there_as_the_share_grows() -> None:
    small, large = router(10.0, sticky_header="X-User"), router(40.0, sticky_header="X-User")
    for i in range(2000):
        if small.pick({"X-User": str(i)}).name == "canary":
            assert large.pick({"X-User": str(i)}).name == "canary"


def test_the_sticky_bucket_is_blake2b_of_the_value() -> None:
    # Pinned: changing the hash would move every sticky client between sides.
    assert bucket("alice") == pytest.approx(30.43658763184171, abs=1e-12)
    assert bucket("user-1") == pytest.approx(60.41924073669338, abs=1e-12)
    assert 0.0 <= bucket("") < 100.0
    assert round(bucket("alice"), 6) == round(
        int.from_bytes(__import__("hashlib").blake2b(b"alice", digest_size=8).digest(), "big") / 2**64 * 100,
        6,
    )


def test_a_client_picks_a_side_only_through_the_enabled_side_header() -> None:
    closed = router(0.0)
    assert closed.pick({"X-Side": "canary"}).name == "baseline"
    opened = router(0.0, side_header="X-Side")
    assert opened.pick({"X-Side": "canary"}).name == "canary"
    assert router(100.0, side_header="X-Side").pick({"X-Side": "baseline"}).name == "baseline"
    assert opened.pick({"X-Side": "nonsense"}).name == "baseline"


def test_a_trip_sends_everything_to_the_baseline_until_a_new_percent() -> None:
    r = router(100.0)
    r.trip()
    assert r.percent == 0.0 and all(r.pick({}).name == "baseline" for _ in range(100))
    r.set_percent(100.0)
    assert not r.tripped and r.pick({}).name == "canary"


@pytest.mark.parametrize("text,value", [("0", 0.0), ("12.5", 12.5), (" 100 \n", 100.0), ("7%", 7.0)])
def test_percent_values(text: str, value: float) -> None:
    assert parse_percent(text) == value


@pytest.mark.parametrize(
    "text",
    # float() takes all but the first five: digit separators, exponents, infinities and the
    # digits of other scripts are not a share an operator writes.
    ["-1", "100.5", "nan", "ten", "", "1_0", "1e1", "inf", "\uff15\uff10", "\u0665", "+5", "0x10"],
)
def test_bad_percent_values_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_percent(text)


def test_a_refused_percent_is_quoted_short() -> None:
    with pytest.raises(ValueError) as refused:
        parse_percent("9" * 5000)
    assert len(str(refused.value)) < 120 and "5000 characters" in str(refused.value)


@pytest.mark.parametrize("name", ["baseline", "v2.1-canary", "gw_blue"])
def test_side_names_are_safe_label_values(name: str) -> None:
    assert label_name(name) == name


@pytest.mark.parametrize("name", ["", "has space", 'quo"te', "x" * 41, "-lead", "a/b"])
def test_unsafe_side_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        label_name(name)


def test_the_percent_file_takes_one_number_and_comments(tmp_path: Path) -> None:
    f = tmp_path / "percent"
    f.write_text("# ramp step 2\n25\n")
    assert read_percent_file(str(f))[0] == 25.0
    f.write_text("25\n30\n")
    with pytest.raises(ValueError):
        read_percent_file(str(f))


def without_a_writer(fifo: Path, call: Callable[[], object]) -> BaseException | None:
    """What `call` raised (None: nothing), failing the test if it waited for the FIFO's writer."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    caller = threading.Thread(target=run, daemon=True)
    caller.start()
    caller.join(5)
    if caller.is_alive():  # let the blocked open() return before failing the test
        with open(fifo, "wb"):
            pass
        caller.join(5)
        pytest.fail("blocked on a FIFO, waiting for a writer")
    return outcome[0]


def test_the_percent_file_must_be_a_small_regular_file(tmp_path: Path) -> None:
    """A FIFO swapped in for the file once froze the whole proxy: open() blocked the event
    loop until a writer came. A device or a huge file is refused too, not read."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert isinstance(without_a_writer(fifo, lambda: read_percent_file(str(fifo))), ValueError)
    for path in ("/dev/zero", str(tmp_path)):
        # ValueError, content that is no percent (the canary gets nothing), not an OSError,
        # a file that cannot be read for a moment (the share kept): a directory swapped in
        # for the file kept the canary at 100 % (an outside review).
        with pytest.raises(ValueError, match="not a regular file"):
            read_percent_file(path)


def test_a_directory_in_the_files_place_gives_the_canary_nothing(tmp_path: Path) -> None:
    f, c = on_file(tmp_path, "100\n")
    assert c.router.percent == 100.0
    f.unlink()
    f.mkdir()
    c.poll()
    assert c.router.percent == 0.0
    big = tmp_path / "big"
    big.write_text("# " + "x" * 5000 + "\n25\n")
    with pytest.raises(ValueError):
        read_percent_file(str(big))


# The control: file, SIGHUP and the trip -------------------------------------------------


def control(
    tmp_path: Path, percent_file: str | None = None, state_file: str | None = None, **kw: object
) -> CanaryControl:
    cfg = CanaryConfig(url="http://c", percent=10.0, percent_file=percent_file, guard=True, **kw)  # type: ignore[arg-type]
    return CanaryControl(build_router("http://b", cfg), cfg, CollectorRegistry(), state_file)


def on_file(tmp_path: Path, text: str) -> tuple[Path, CanaryControl]:
    """A percent file holding `text`, and a control started from it."""
    f = tmp_path / "percent"
    f.write_text(text)
    return f, control(tmp_path, str(f))


def gauges(c: CanaryControl) -> tuple[float, float]:
    reg = c.percent_gauge._value.get(), c.tripped_gauge._value.get()  # type: ignore[attr-defined]
    return reg


def test_the_percent_file_overrides_the_flag_and_its_changes_apply(tmp_path: Path) -> None:
    f = tmp_path / "percent"
    f.write_text("20\n")
    c = control(tmp_path, str(f))
    assert c.router.percent == 20.0 and gauges(c) == (20.0, 0.0)
    f.write_text("35\n")
    with capture_logs() as logs:
        c.poll()
    assert c.router.percent == 35.0 and gauges(c)[0] == 35.0
    assert [entry["event"] for entry in logs] == ["canary_percent_changed"]
    with capture_logs() as logs:
        c.poll()  # unchanged: nothing to do
    assert logs == []


def rejected(c: CanaryControl) -> float:
    return float(c.rejected_gauge._value.get())  # type: ignore[attr-defined]


def test_a_bad_value_in_the_file_gives_the_canary_nothing_and_says_why(tmp_path: Path) -> None:
    f, c = on_file(tmp_path, "20\n")
    f.write_text("two hundred\n")
    with capture_logs() as logs:
        c.poll()
        c.poll()  # said once, not every poll
    assert c.router.percent == 0.0 and gauges(c)[0] == 0.0 and rejected(c) == 1.0
    assert [entry["event"] for entry in logs] == ["canary_percent_rejected"]
    assert "two hundred" in logs[0]["reason"] and logs[0]["percent"] == 0.0
    f.write_text("20\n")  # corrected: the operator's word again
    c.poll()
    assert c.router.percent == 20.0 and rejected(c) == 0.0


def test_a_file_that_cannot_be_read_for_a_moment_keeps_the_share(tmp_path: Path) -> None:
    f, c = on_file(tmp_path, "20\n")
    moved = tmp_path / "moved"
    f.rename(moved)
    with capture_logs() as logs:
        c.poll()
    assert c.router.percent == 20.0 and logs[0]["event"] == "canary_percent_rejected"
    assert rejected(c) == 1.0
    moved.rename(f)  # a move and back: no new word, the share as it was
    with capture_logs() as logs:
        c.poll()
    assert c.router.percent == 20.0 and rejected(c) == 0.0 and logs == []


def test_a_write_caught_between_its_truncate_and_its_write_keeps_the_share(tmp_path: Path) -> None:
    # `echo 20 > f` truncates, then writes: a poll in between reads an empty file.
    f, c = on_file(tmp_path, "50\n")
    f.write_text("")
    c.poll()
    assert c.router.percent == 50.0 and rejected(c) == 1.0
    f.write_text("20\n")
    c.poll()
    assert c.router.percent == 20.0 and rejected(c) == 0.0
    # Blank lines or a commented-out value were written so: a rollback by commenting out.
    for written in ("\n", "#20\n", "# 20 rolled back\n"):
        f.write_text("20\n")
        c.poll()
        f.write_text(written)
        c.poll()
        assert c.router.percent == 0.0 and rejected(c) == 1.0, written


@pytest.mark.parametrize(
    "typed",
    [
        "O\n",  # the letter
        "5\n0\n",  # `echo 0 >> file`
        "0,0\n",
        "canary-percent: 0\n",
        "\xff\n",  # not UTF-8
    ],
)
def test_a_mistyped_rollback_still_rolls_back(tmp_path: Path, typed: str) -> None:
    # An outside review: each of these left a canary at 50 %, with one log line to say so.
    f, c = on_file(tmp_path, "50\n")
    f.write_bytes(typed.encode("latin-1"))
    c.poll()
    assert c.router.percent == 0.0 and rejected(c) == 1.0


def test_a_byte_order_mark_is_not_part_of_the_value(tmp_path: Path) -> None:
    # What Notepad and PowerShell's `Set-Content -Encoding utf8` write before the number.
    f, c = on_file(tmp_path, "50\n")
    f.write_bytes(b"\xef\xbb\xbf0\r\n")
    c.poll()
    assert c.router.percent == 0.0 and rejected(c) == 0.0
    f.write_bytes(b"\xef\xbb\xbf25\n")
    c.poll()
    assert c.router.percent == 25.0


def relink(link: Path, target: Path) -> None:
    os.remove(link)
    os.symlink(target.name, link)


def test_a_trip_stays_through_a_garbled_file_read_well_again(tmp_path: Path) -> None:
    f, garbled, link = tmp_path / "percent", tmp_path / "garbled", tmp_path / "link"
    f.write_text("50\n")
    garbled.write_text("fifty\n")
    os.symlink(f.name, link)
    c = control(tmp_path, str(link))
    c.router.trip()
    relink(link, garbled)
    c.poll()
    assert c.router.percent == 0.0 and rejected(c) == 1.0
    relink(link, f)  # back to the file it took last, unchanged: no new word
    c.poll()
    assert c.router.tripped and c.router.percent == 0.0 and rejected(c) == 0.0
    c.router.set_percent(50.0)  # (as SIGHUP would)
    relink(link, garbled)
    c.poll()
    relink(link, f)
    c.poll()  # not tripped: the share it had comes back
    assert c.router.percent == 50.0


def test_a_configmap_update_that_swaps_a_symlink_is_seen(tmp_path: Path) -> None:
    # Kubernetes mounts a ConfigMap as key -> ..data/key, ..data -> ..<timestamp>/ and
    # updates it by swapping ..data to a new directory (the file itself is never written).
    old, new = tmp_path / "..2026_01", tmp_path / "..2026_02"
    old.mkdir()
    new.mkdir()
    (old / "percent").write_text("5\n")
    (new / "percent").write_text("50\n")
    os.symlink(old.name, tmp_path / "..data")
    os.symlink("..data/percent", tmp_path / "percent")
    c = control(tmp_path, str(tmp_path / "percent"))
    assert c.router.percent == 5.0
    os.symlink(new.name, tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    c.poll()
    assert c.router.percent == 50.0


def stream(trace_id: str, upstream: str, *, bad: bool) -> AuditRecord:
    audit = StreamAudit(ChatCompletions(), 0.0)
    if not bad:
        audit.feed(
            b'data: {"choices":[{"index":0,"delta":{"content":"x"},'
            b'"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n',
            0.1,
        )
    else:
        audit.feed(b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n', 0.1)
    result = audit.finish(0.2, End.UPSTREAM_BROKEN if bad else End.UPSTREAM_EOF)
    return AuditRecord(
        trace_id, "chat_completions", "POST", "m", 200, 0.0, 0.2, 10, result, upstream=upstream
    )


def feed_until_trip(c: CanaryControl, limit: int = 200) -> int:
    for i in range(limit):
        side = "canary" if i % 2 else "baseline"
        c.record(stream(f"t{i}", side, bad=side == "canary"))
        if c.router.tripped:
            return i
    raise AssertionError("never tripped")


def test_a_trip_stops_the_canary_logs_why_and_shares_it(tmp_path: Path) -> None:
    f = tmp_path / "percent"
    f.write_text("50\n")
    state = tmp_path / "tripped.json"
    c = control(tmp_path, str(f), str(state))
    with capture_logs() as logs:
        feed_until_trip(c)
    assert c.router.percent == 0.0 and gauges(c) == (0.0, 1.0)
    trip = [entry for entry in logs if entry["event"] == "canary_tripped"]
    assert len(trip) == 1
    assert trip[0]["rule"] == "bad_share" and trip[0]["canary"]["bad_percent"] == 100.0
    assert trip[0]["baseline"]["streams"] == 20 and len(trip[0]["trace_ids"]) == 5
    assert state.exists()

    # Another worker with the same percent file follows the shared trip from its start (it
    # waited for its first poll: up to 0.5 s of requests to the canary).
    other = control(tmp_path, str(f), str(state))
    assert other.router.tripped and other.router.percent == 0.0
    other.poll()
    assert other.router.tripped and other.router.percent == 0.0

    # Streams still finishing on the canary after the trip change nothing.
    c.record(stream("late", "canary", bad=True))
    # Writing the file again (even the same value) is the operator's word: the trip clears.
    f.write_text("50\n")
    os.utime(f, ns=(1, 1))
    c.poll()
    other.poll()
    assert not c.router.tripped and c.router.percent == 50.0 and gauges(c) == (50.0, 0.0)
    assert not other.router.tripped  # the shared trip belonged to the old file


def test_sighup_clears_a_trip_and_rereads_the_file(tmp_path: Path) -> None:
    f = tmp_path / "percent"
    f.write_text("50\n")
    c = control(tmp_path, str(f))
    feed_until_trip(c)
    f.write_text("25\n")
    c.reload()
    assert not c.router.tripped and c.router.percent == 25.0
    assert len(c.guard.canary.samples) == 0  # a fresh comparison after the operator spoke


def test_without_the_guard_nothing_trips(tmp_path: Path) -> None:
    cfg = CanaryConfig(url="http://c", percent=50.0)
    c = CanaryControl(build_router("http://b", cfg), cfg, CollectorRegistry())
    for i in range(200):
        c.record(stream(f"t{i}", "canary" if i % 2 else "baseline", bad=bool(i % 2)))
    assert not c.router.tripped and c.router.percent == 50.0


def test_the_docs_document_every_canary_flag_metric_and_log_event() -> None:
    from sse_audit_proxy.cli import main as cli

    docs = Path(__file__).resolve().parents[2] / "docs"
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    serve = sub.choices["serve"]  # type: ignore[index]
    flags = [
        s for a in serve._actions for s in a.option_strings if s.startswith(("--canary", "--upstream-name"))
    ]
    assert len(flags) == 13
    configuration = (docs / "operate/configuration.md").read_text()
    for flag in flags:
        assert f"| `{flag}" in configuration, flag
    for page, names in {
        "operate/metrics.md": (
            "sse_audit_canary_percent",
            "sse_audit_canary_tripped",
            "sse_audit_bad_streams_total",
            "sse_audit_upstream_info",
        ),
        "operate/logs.md": (
            "canary_tripped",
            "canary_percent_changed",
            "canary_percent_rejected",
            "canary_trip_followed",
        ),
        "operate/canary.md": (
            "# Running a canary\n",
            "?upstream=canary",
            "demo --canary buffered --duration 30",
        ),
        "tools/probe.md": ("`--side NAME`",),
    }.items():
        text = (docs / page).read_text()
        for name in names:
            assert name in text, (page, name)


def serve_config(monkeypatch: pytest.MonkeyPatch, *argv: str, **env: str) -> object:
    from sse_audit_proxy.cli import main as cli
    from sse_audit_proxy.cli.serve import config_from

    for name in [k for k in os.environ if k.startswith("SSE_AUDIT_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = cli.build_parser().parse_args(["serve", "--upstream", "http://b", *argv])
    return config_from(args)


def test_the_canary_comes_from_flags_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = serve_config(
        monkeypatch,
        SSE_AUDIT_CANARY="http://c:8000/",
        SSE_AUDIT_CANARY_PERCENT="12.5",
        SSE_AUDIT_CANARY_GUARD="1",
    )
    canary = cfg.canary  # type: ignore[attr-defined]
    assert (canary.url, canary.percent, canary.guard) == ("http://c:8000/", 12.5, True)
    cfg = serve_config(
        monkeypatch,
        "--canary",
        "http://c",
        "--canary-percent",
        "3",
        "--upstream-name",
        "blue",
        "--canary-name",
        "green",
    )
    canary = cfg.canary  # type: ignore[attr-defined]
    assert (canary.percent, canary.upstream_name, canary.canary_name) == (3.0, "blue", "green")
    assert serve_config(monkeypatch).canary.url is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--canary", "http://c", "--upstream-name", "x", "--canary-name", "x"], "must differ"),
        # Below 1, a canary as fast as the baseline trips.
        (["--canary", "http://c", "--canary-guard", "--canary-guard-ttft-ratio", "0.5"], "at least 1"),
        # More than the window: the guard could never trip.
        (
            [
                "--canary",
                "http://c",
                "--canary-guard",
                "--canary-guard-window",
                "50",
                "--canary-guard-min-streams",
                "60",
            ],
            "never trip",
        ),
        (["--canary", "http://c", "--canary-guard", "--canary-guard-window", "100000"], "at most 5,000"),
    ],
)
def test_inconsistent_canary_flags_are_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], needle: str
) -> None:
    from sse_audit_proxy.cli.options import ConfigError

    with pytest.raises(ConfigError, match=needle):
        serve_config(monkeypatch, *argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["--canary", "http://c", "--canary-percent", "150"],
        ["--canary", "http://c", "--canary-name", "has space"],
    ],
)
def test_bad_canary_values_are_refused_by_the_parser(
    monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        serve_config(monkeypatch, *argv)
    assert exc.value.code == 2


def test_a_missing_percent_file_at_start_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as exc:  # a wrong path: refused with the other flags
        serve_config(monkeypatch, "--canary", "http://c", "--canary-percent-file", str(tmp_path / "nope"))
    assert exc.value.code == 2


def test_a_bad_value_at_start_gives_the_canary_nothing_until_a_good_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A pod that starts while the ConfigMap holds a typo: the running pods keep their last good
    # share and say so; this one started (it used to exit 2 and crash-loop) with none.
    f = tmp_path / "percent"
    f.write_text("lots\n")
    serve_config(monkeypatch, "--canary", "http://c", "--canary-percent-file", str(f))
    with capture_logs() as logs:
        c = control(tmp_path, str(f))
    assert c.router.percent == 0.0 and gauges(c) == (0.0, 0.0)
    assert [e["event"] for e in logs] == ["canary_percent_rejected"]
    c.poll()
    assert c.router.percent == 0.0
    f.write_text("30\n")
    c.poll()
    assert c.router.percent == 30.0


@pytest.mark.parametrize("how", ["moved", "unreadable"])
def test_a_moment_of_errors_reading_the_file_undoes_no_trip(tmp_path: Path, how: str) -> None:
    f = tmp_path / "percent"
    f.write_text("50\n")
    c = control(tmp_path, str(f))
    feed_until_trip(c)
    away = tmp_path / "away"
    with capture_logs() as logs:
        if how == "moved":  # the same file, moved away and back: no new word from the operator
            f.rename(away)
            c.poll()
            away.rename(f)
        else:  # descriptors ran out for a moment (EMFILE)
            with pytest.MonkeyPatch.context() as m:
                m.setattr(
                    os, "open", lambda *a, **k: (_ for _ in ()).throw(OSError(24, "Too many open files"))
                )
                c.poll()
        c.poll()
    assert [e["event"] for e in logs] == ["canary_percent_rejected"]
    assert c.router.tripped and c.router.percent == 0.0 and gauges(c) == (0.0, 1.0)


def test_a_fifo_as_a_file_flag_is_refused_at_start_not_waited_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The start-up check opened the path to see it could: on a FIFO that waited for a writer,
    and `serve` hung with nothing said (the docs promise a FIFO is refused, not waited on)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    argv = ("--canary", "http://c", "--canary-percent-file", str(fifo))
    refused = without_a_writer(fifo, lambda: serve_config(monkeypatch, *argv))
    assert isinstance(refused, SystemExit) and refused.code == 2


def test_a_worker_started_after_a_trip_sends_not_one_request_to_the_canary(tmp_path: Path) -> None:
    shared = str(tmp_path / "trip.json")
    first = control(tmp_path, state_file=shared)
    for i in range(60):
        first.record(stream(f"t{i}", "canary" if i % 2 else "baseline", bad=bool(i % 2)))
    assert first.router.tripped
    # A replacement worker (same flags, same shared file) starts tripped, before its first poll.
    later = control(tmp_path, state_file=shared)
    assert later.router.tripped and later.router.percent == 0.0
    assert gauges(later) == (0.0, 1.0)


def test_a_large_guard_window_works() -> None:
    # From 1,030 the binomial terms passed the float range: every stream's check raised.
    lower, upper = quantile_bound_ranks(5000)
    assert lower is not None and upper is not None and lower < 0.95 * 5000 < upper


async def test_a_failed_poll_is_logged_by_where_it_failed_never_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception's message can quote what the code handled: the line names the failure
    (`exception`, `at`, `stack`), as every other failure line does, and the watcher goes on."""
    _, c = on_file(tmp_path, "20\n")
    polls = 0

    def fail() -> None:
        nonlocal polls
        polls += 1
        raise RuntimeError("sk-proj-secret quoted by a library")

    monkeypatch.setattr(canary_control, "POLL_INTERVAL", 0.01)
    monkeypatch.setattr(c, "poll", fail)
    with capture_logs() as logs:
        task = asyncio.create_task(c.watch())
        for _ in range(200):
            await asyncio.sleep(0.01)
            if polls >= 2:
                break
        task.cancel()
    failed = [entry for entry in logs if entry["event"] == "canary_poll_failed"]
    assert polls >= 2 and failed, logs
    assert failed[0]["exception"] == "RuntimeError" and "fail" in failed[0]["at"]
    assert "secret" not in repr(failed) and "exc_info" not in failed[0]
