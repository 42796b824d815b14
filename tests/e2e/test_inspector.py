"""The inspector pages (issue 15), in a real headless Chromium: they load, the plot is drawn,
the filters work, and everything from the wire is shown as text, never run.

Chromium comes from Debian (`chromium`, installed by .ci/run); no browser is downloaded. With
INSPECTOR_SCREENSHOTS=DIR the screenshots of a buffered and a bursty stream are written to
DIR as well (the docs' come from `INSPECTOR_SCREENSHOTS=docs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import pathlib
import re
import shutil
from typing import Any

import aiohttp
import pytest
from aiohttp import web

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium missing: .ci/run installs Debian's chromium and chromium-driver"
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"
PROMPT = "PROMPT-TEXT-inspector-must-never-show-this"
FAST = {
    "X-Demo-Frames": "30",
    "X-Demo-TTFT-Ms": "10",
    "X-Demo-Interval-Ms": "8",
    "X-Demo-Jitter": "0",
    "X-Demo-Fault-Ms": "400",
}


async def browse(url: Any, tmp: pathlib.Path, *extra: str) -> str:
    """Chromium's output for `url`: `--dump-dom` gives the DOM after it loaded."""
    assert CHROMIUM is not None
    profile = tmp / f"profile-{os.urandom(4).hex()}"  # a fresh one every time
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={profile}",
        *extra,
        str(url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


async def dom(url: Any, tmp: pathlib.Path) -> str:
    return await browse(url, tmp, "--dump-dom")


async def screenshot(url: Any, tmp: pathlib.Path, name: str) -> pathlib.Path:
    path = tmp / name
    await browse(url, tmp, f"--screenshot={path}", "--window-size=1100,900")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("INSPECTOR_SCREENSHOTS")
    if keep:
        shutil.copy(path, pathlib.Path(keep) / name)
    return path


async def chat(
    http: aiohttp.ClientSession, base: Any, model: str, trace: str, headers: dict[str, str] | None = None
) -> None:
    body = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": PROMPT}],
    }
    async with http.post(
        base / "v1/chat/completions", json=body, headers={**(headers or {}), "X-Client-Request-Id": trace}
    ) as resp:
        with contextlib.suppress(aiohttp.ClientPayloadError):
            await resp.read()


@needs_chromium
async def test_pages_load_the_plot_is_drawn_and_filters_work(
    demo_gateway: Any, proxy: Any, http: aiohttp.ClientSession, tmp_path: pathlib.Path
) -> None:
    running = await proxy(await demo_gateway())
    for scenario in ("healthy", "buffered", "truncated", "stall"):
        await chat(http, running.url, f"demo-{scenario}", f"ui-{scenario}", FAST)
    await running.sink.wait(4)
    base = running.metrics_url

    page = await dom(base.with_path("/"), tmp_path)
    rows = re.findall(r"<tr class=\"stream\">", page)
    assert len(rows) == 4
    for scenario in ("healthy", "buffered", "truncated", "stall"):
        assert f"ui-{scenario}" in page

    truncated = await dom(base.with_path("/").with_query(outcome="truncated"), tmp_path)
    assert len(re.findall(r"<tr class=\"stream\">", truncated)) == 1
    assert "ui-truncated" in truncated and "ui-healthy" not in truncated
    buffered = await dom(base.with_path("/").with_query(anomaly="buffered"), tmp_path)
    assert "ui-buffered" in buffered and "ui-stall" not in buffered
    by_model = await dom(base.with_path("/").with_query(model="demo-stall"), tmp_path)
    assert "ui-stall" in by_model and "ui-buffered" not in by_model

    stall = await dom(base.with_path("/ui/streams/ui-stall"), tmp_path)
    assert "<svg" in stall and 'id="timeline"' in stall
    assert len(re.findall(r'class="tick content"', stall)) == 30  # one tick per content frame
    assert len(re.findall(r'class="tick terminal"', stall)) == 1
    assert re.search(r'class="gap"', stall)  # the stall is shaded
    assert "s silent" in stall
    assert 'href="/streams/ui-stall/evidence"' in stall
    assert PROMPT not in page + stall


@needs_chromium
async def test_every_wire_value_is_shown_as_text_never_run(
    upstream: Any, proxy: Any, http: aiohttp.ClientSession, tmp_path: pathlib.Path
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Evil-Request-Id": EVIL})
        await resp.prepare(request)
        doc = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": EVIL}]}
        await resp.write(b"data: " + json.dumps(doc).encode() + b"\n\n")
        return resp  # no [DONE]: truncated, and its reasons quote the finish reason

    running = await proxy(await upstream(handler))
    await chat(http, running.url, f"m{EVIL}", f"t{EVIL}")
    rec = await running.record()
    raw_pages = []
    for url in (
        running.metrics_url.with_path("/"),
        running.metrics_url.with_path("/ui/streams/" + rec.trace_id),
    ):
        async with http.get(url) as resp:
            assert resp.status == 200
            assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
            raw_pages.append(await resp.text())
    stream_html = raw_pages[1]
    assert "<script" not in stream_html and "<img" not in stream_html
    assert html.escape(EVIL, quote=True) in stream_html  # the header value and finish reason

    shown = await dom(running.metrics_url.with_path("/ui/streams/" + rec.trace_id), tmp_path)
    assert "<script" not in shown and "<img" not in shown  # no element was made of them
    assert html.escape(EVIL, quote=False) in shown  # ... they are text in the page
    listed = await dom(running.metrics_url.with_path("/"), tmp_path)
    assert "<script" not in listed and "<img" not in listed


@needs_chromium
async def test_screenshots_of_a_buffered_and_a_bursty_stream(
    demo_gateway: Any, upstream: Any, proxy: Any, http: aiohttp.ClientSession, tmp_path: pathlib.Path
) -> None:
    demo = await proxy(await demo_gateway())
    await chat(
        http,
        demo.url,
        "demo-buffered",
        "incident-buffered",  # 1.5 s withheld
        {**FAST, "X-Demo-Interval-Ms": "50"},
    )
    assert (await demo.record()).stream.anomalies == ["buffered"]  # type: ignore[union-attr]
    bursty = await proxy(await demo_gateway())
    await chat(
        http,
        bursty.url,
        "demo-bursty",
        "incident-bursty",
        {"X-Demo-Frames": "60", "X-Demo-Interval-Ms": "25", "X-Demo-Jitter": "0"},
    )
    assert (await bursty.record()).stream.anomalies == ["bursty"]  # type: ignore[union-attr]

    shown = await dom(bursty.metrics_url.with_path("/ui/streams/incident-bursty"), tmp_path)
    assert len(re.findall(r'class="gap"', shown)) >= 3  # each silence before a clump
    for running, name in ((demo, "buffered"), (bursty, "bursty")):
        png = await screenshot(
            running.metrics_url.with_path(f"/ui/streams/incident-{name}"), tmp_path, f"inspector-{name}.png"
        )
        assert png.stat().st_size > 20_000  # a drawn page, not a blank one


def test_list_shows_the_canarys_upstream_column_only_when_records_carry_it() -> None:
    from sse_audit_proxy.server.inspector import list_page
    from sse_audit_proxy.sinks.recent import Query

    plain = {
        "trace_id": "a",
        "started_at": "2026-01-01T00:00:00.000Z",
        "route": "chat",
        "model": "m",
        "status": 200,
        "outcome": "complete",
        "anomalies": [],
    }
    without = list_page(Query(), {"streams": [plain], "workers": []}).text
    assert without is not None and "<th>upstream</th>" not in without
    canary = {**plain, "trace_id": "b", "upstream": "<b>canary</b>"}
    page = list_page(Query(), {"streams": [canary, plain], "workers": []}).text
    assert page is not None and "<th>upstream</th>" in page
    assert "<td>&lt;b&gt;canary&lt;/b&gt;</td>" in page and "<b>canary" not in page


def test_a_long_streams_plot_draws_bands_and_marks_a_silence_inside_one() -> None:
    from sse_audit_proxy.core.timeline import Timeline
    from sse_audit_proxy.server.inspector import timeline_svg

    tl = Timeline()
    for i in range(5000):  # 5 ms apart, with a 2 s stall at frame 3001 (inside some band)
        tl.add(i * 0.005 + (2.0 if i > 3000 else 0.0), b"\x01")
    svg = timeline_svg(tl.to_json(), 0.0, 27_000.0)
    assert len(re.findall(r"class='tick content'", svg)) == 256  # the exact part
    assert re.search(r"class='tick content group'", svg)  # then bands
    assert "2.00 s silent" in svg  # the stall, between two bands or marked inside one
    assert "drawn as bands of about" in svg


def test_the_silence_after_the_last_frame_is_marked_to_the_streams_end() -> None:
    """A hang's decisive silence is after its last frame, to the idle timeout: the plot ended
    at the last frame, and the 5 s that made it a `timeout` were nowhere (outside review)."""
    from sse_audit_proxy.core.timeline import Timeline
    from sse_audit_proxy.server.inspector import _end_ms, timeline_svg

    tl = Timeline()
    for i in range(20):
        tl.add(0.1 + i * 0.02, b"\x01")
    hung = timeline_svg(tl.to_json(), 100.0, _end_ms({"duration_ms": 5490.0, "request_sent_ms": 10.0}))
    # The last frame at 480 ms, the end at 5,480 ms (not 5,490: the upload is not the stream's).
    assert re.findall(r"[0-9.]+ s silent", hung) == ["5.00 s silent"]
    ended = timeline_svg(tl.to_json(), 100.0, _end_ms({"duration_ms": 495.0, "request_sent_ms": 10.0}))
    assert re.findall(r"[0-9.]+ s silent", ended) == ["0.10 s silent"]  # the first frame's wait alone
