"""The inspector: read-only HTML pages on the metrics port for the on-call engineer.

`/` lists the recent streams (filter by outcome, anomaly, model, route, upstream); `/ui/streams/
{trace_id}` shows one stream: its verdict, the reasons, a timeline plot (inline SVG: each frame
a tick on a time axis, content, keep-alive and the end distinguishable, long silences shaded
and labelled), the request's shape, the response head and links to the evidence JSON.

Server-rendered from the same lookups as `/streams/...` (so it works across `--workers`), no
JavaScript, no external asset: it works offline. Every value that came from the wire or a
client (trace IDs, model names, header values, finish reasons, reasons quoting them) is
escaped with `html.escape` where it is written into the page, never earlier.
"""

from __future__ import annotations

import asyncio
import html
import json
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from sse_audit_proxy.core.verdict import Outcome
from sse_audit_proxy.server.lookup import ANOMALIES, OUTCOMES, Source, read_query, unanswered
from sse_audit_proxy.server.off_loop import uncollected
from sse_audit_proxy.sinks.recent import Query

PAGE_LIMIT = 200
PLOT_W, PLOT_H, PAD_L, PAD_R, AXIS_Y = 960, 170, 48, 16, 130
# A silence this long, relative to the plotted span, is shaded and labelled.
GAP_SHARE, GAP_MIN_S, GAP_ALWAYS_S = 0.08, 0.1, 1.0
# Kind -> (colour, tick height): content tall and blue, keep-alives short and grey, the end
# of a stream black and tallest, errors red.
STYLE = {
    "content": ("#1f6feb", 60),
    "keepalive": ("#8b949e", 18),
    "other": ("#bbbbbb", 30),
    "finish": ("#2da44e", 70),
    "usage": ("#8250df", 50),
    "terminal": ("#000000", 90),
    "error": ("#cf222e", 90),
    "malformed": ("#fb8500", 80),
}
_PRIORITY = ("error", "malformed", "terminal", "finish", "usage", "content", "keepalive", "other")
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em 2em;color:#1f2328}
h1{font-size:1.3em;margin:.2em 0 .6em}h2{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #d0d7de;
text-align:left;vertical-align:top}th{background:#f6f8fa}
.complete{color:#1a7f37}.bad{color:#cf222e;font-weight:600}.anom{color:#9a6700}
code,.mono{font-family:ui-monospace,monospace;font-size:.92em}
form{margin:.4em 0 1em}form label{margin-right:1em}ul.reasons li{margin:.25em 0}
.legend span{display:inline-block;margin-right:1.2em}.sw{display:inline-block;width:10px;
height:10px;margin-right:4px;vertical-align:middle}a{color:#0969da}
"""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _page(title: str, body: str) -> web.Response:
    return _response(_html(title, body))


def _html(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
        f"<meta name=viewport content='width=device-width'><style>{CSS}</style></head>"
        f"<body>{body}</body></html>"
    )


def _response(doc: str) -> web.Response:
    # Nothing on these pages may run or load: a header says so too, should escaping ever fail.
    return web.Response(
        text=doc,
        content_type="text/html",
        headers={
            # Nor may another site frame them (clickjacking): frame-ancestors, and the older header.
            "Content-Security-Policy": (
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
            ),
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def _outcome(value: Any) -> str:
    cls = "complete" if value == Outcome.COMPLETE else "bad"
    return f"<span class={cls}>{esc(value)}</span>"


def stream_href(trace_id: str) -> str:
    return "/ui/streams/" + quote(trace_id, safe="")


# The list ----------------------------------------------------------------------------------


def _select(name: str, options: list[str], chosen: str | None) -> str:
    items = ["<option value=''>any</option>"] + [
        f"<option{' selected' if o == chosen else ''} value='{esc(o)}'>{esc(o)}</option>" for o in options
    ]
    return f"<label>{name} <select name={name}>{''.join(items)}</select></label>"


def _filters(q: Query) -> str:
    return (
        "<form method=get action='/'>"
        + _select("outcome", list(OUTCOMES), q.outcome)
        + _select("anomaly", list(ANOMALIES), q.anomaly)
        + f"<label>model <input name=model value='{esc(q.model or '')}' size=16></label>"
        + f"<label>route <input name=route value='{esc(q.route or '')}' size=14></label>"
        + f"<label>upstream <input name=upstream value='{esc(q.upstream or '')}' size=10></label>"
        + f"<label>status <input name=status value='{esc(q.status or '')}' size=4></label>"
        + f"<label>error <input name=error value='{esc(q.error or '')}' size=16>"
        + "</label><button type=submit>filter</button> <a href='/'>clear</a></form>"
    )


def _row(s: dict[str, Any], with_upstream: bool) -> str:
    trace = s.get("trace_id", "")
    anomalies = ", ".join(s.get("anomalies") or [])
    cells = [
        f"<td class=mono>{esc(s.get('started_at'))}</td>",
        f"<td class=mono><a href='{esc(stream_href(trace))}'>{esc(trace)}</a></td>",
        f"<td>{esc(s.get('route'))}</td>",
        f"<td>{esc(s.get('model'))}</td>",
    ]
    if with_upstream:
        cells.append(f"<td>{esc(s.get('upstream'))}</td>")
    cells += [
        f"<td>{esc(s.get('status'))}</td>",
        f"<td>{_outcome(s['outcome']) if 'outcome' in s else '-'}</td>",
        f"<td class=anom>{esc(anomalies)}</td>",
        f"<td>{_ms(s.get('ttft_ms'))}</td>",
        f"<td>{_ms(s.get('max_gap_ms'))}</td>",
        f"<td>{_ms(s.get('duration_ms'))}</td>",
    ]
    return "<tr class=stream>" + "".join(cells) + "</tr>"


def list_page(q: Query, answer: dict[str, Any]) -> web.Response:
    return _response(list_html(q, answer))


def list_html(q: Query, answer: dict[str, Any]) -> str:
    streams = answer.get("streams", [])
    with_upstream = any("upstream" in s for s in streams)
    head = [
        "started (UTC)",
        "trace ID",
        "route",
        "model",
        *(["upstream"] if with_upstream else []),
        "status",
        "outcome",
        "anomalies",
        "TTFT",
        "worst gap",
        "duration",
    ]
    rows = "".join(_row(s, with_upstream) for s in streams)
    workers = answer.get("workers", [])
    body = (
        "<h1>sse-audit-proxy: recent streams</h1>"
        + _filters(q)
        + f"<p>{len(streams)} shown (newest first, at most {q.limit}); "
        + f"{len(workers)} process(es) asked"
        + (f", {missing} did not answer" if (missing := unanswered(answer)) else "")
        + ". JSON: <a href='/streams/recent?"
        + f"{esc(urlencode(q.params()))}'>/streams/recent</a></p>"
        + "<table id=streams><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr>"
        + rows
        + "</table>"
    )
    return _html("recent streams", body)


# The timeline plot ---------------------------------------------------------------------------


def _main_kind(kinds: str) -> str:
    parts = kinds.split("+")
    return next((k for k in _PRIORITY if k in parts), "other")


def _ticks(timeline: dict[str, Any]) -> list[tuple[float, str, int, float]]:
    """(t ms, main kind, frames, last t ms) per row."""
    out = []
    for row in timeline.get("rows", []):
        if len(row) == 2:
            out.append((float(row[0]), _main_kind(row[1]), 1, float(row[0])))
        else:
            out.append((float(row[0]), _main_kind(row[1]), int(row[2]), float(row[3])))
    return out


def _least_silence(span: float) -> float:
    """The shortest silence (ms) the plot marks: 8 % of the stream, at least 100 ms, at most
    1 s (a second without a byte is always worth seeing)."""
    return max(GAP_MIN_S * 1000.0, min(span * GAP_SHARE, GAP_ALWAYS_S * 1000.0))


def _gaps(ticks: list[tuple[float, str, int, float]], span: float) -> list[tuple[float, float]]:
    """Silences worth shading: from the request to the first frame, and between one row's
    last arrival and the next row's first, longer than a share of the plot (a band's own
    silence is marked by `_hidden_silences`), and from the last frame to the stream's end."""
    least = _least_silence(span)
    gaps, before = [], 0.0
    for first, _, _, last in ticks:
        if first - before >= least:
            gaps.append((before, first))
        before = max(before, last)
    if span - before >= least:  # after the last frame, to the end: a hang's decisive silence
        gaps.append((before, span))
    return gaps


def _hidden_silences(timeline: dict[str, Any], span: float, x: Any) -> list[str]:
    """A band of the downsampled part keeps its longest silence, not where it fell: such a
    band is marked red, with the silence as its label."""
    least = _least_silence(span)
    out = []
    for row in timeline.get("rows", []):
        if len(row) == 5 and row[4] >= least:
            out.append(
                f"<rect class='gap hidden' x='{x(row[0]):.1f}' y='20' "
                f"width='{max(x(row[3]) - x(row[0]), 2):.1f}' height='{AXIS_Y - 20}' "
                f"fill='#ffd8d3'><title>{row[2]} frames, a silence of "
                f"{row[4] / 1000:.2f} s among them</title></rect><text "
                f"x='{x(row[0]):.1f}' y='16' font-size='11' fill='#cf222e'>"
                f"{row[4] / 1000:.2f} s silent within</text>"
            )
    return out


def _axis(span: float, x: Any) -> str:
    step = next(
        (
            s
            for s in (
                1,
                2,
                5,
                10,
                20,
                50,
                100,
                200,
                500,
                1000,
                2000,
                5000,
                10_000,
                20_000,
                60_000,
                120_000,
                300_000,
                600_000,
            )
            if span / s <= 10
        ),
        1_000_000,
    )
    parts = [f"<line x1={PAD_L} y1={AXIS_Y} x2={PLOT_W - PAD_R} y2={AXIS_Y} stroke='#57606a'/>"]
    t = 0.0
    while t <= span + 1e-9:
        label = f"{t / 1000:g} s" if step >= 1000 else f"{t:g} ms"
        parts.append(
            f"<line x1={x(t):.1f} y1={AXIS_Y} x2={x(t):.1f} y2={AXIS_Y + 5} "
            f"stroke='#57606a'/><text x={x(t):.1f} y={AXIS_Y + 18} font-size=11 "
            f"text-anchor=middle fill='#57606a'>{label}</text>"
        )
        t += step
    return "".join(parts)


def _read_sizes(ticks: list[tuple[float, str, int, float]], x: Any) -> list[str]:
    """`\u00d7N` (times N) over each read that brought N ≥ 5 frames at once: a burst is one tick to the eye,
    its size is the point."""
    sizes: dict[float, int] = {}
    for t, _, n, last in ticks:
        if n == 1 or t == last:
            sizes[t] = sizes.get(t, 0) + n
    out = []
    for i, (t, n) in enumerate(t_n for t_n in sizes.items() if t_n[1] >= 5):
        y = AXIS_Y - 78 + 12 * (i % 2)  # neighbours alternate rows, so labels never collide
        out.append(
            f"<text class=burst x='{x(t):.1f}' y='{y}' font-size='11' "
            f"text-anchor='middle' fill='#1f2328'>\u00d7{n}<title>{n} frames in one "
            "read</title></text>"
        )
    return out


def _end_ms(rec: dict[str, Any]) -> float | None:
    """The end of relaying on the timeline's clock, which starts when the request was all sent
    (`duration_ms` counts from its arrival: a slow upload's time is not the stream's)."""
    duration, sent = rec.get("duration_ms"), rec.get("request_sent_ms")
    if not isinstance(duration, (int, float)):
        return None
    return duration - sent if isinstance(sent, (int, float)) else duration


def timeline_svg(timeline: dict[str, Any] | None, ttft_ms: float | None, duration_ms: float | None) -> str:
    """`duration_ms`: the end of relaying, in ms after the request was all sent."""
    if not timeline or not timeline.get("rows"):
        return "<p>No frames were received.</p>"
    ticks = _ticks(timeline)
    span = max([duration_ms or 0.0] + [last for *_, last in ticks]) or 1.0
    width = PLOT_W - PAD_L - PAD_R

    def x(t: float) -> float:
        return PAD_L + width * t / span

    parts = [
        f"<svg id=timeline xmlns='http://www.w3.org/2000/svg' width={PLOT_W} "
        f"height={PLOT_H} viewBox='0 0 {PLOT_W} {PLOT_H}' role=img "
        "aria-label='frames on a time axis'>"
    ]
    for a, b in _gaps(ticks, span):
        parts.append(
            f"<rect class=gap x={x(a):.1f} y=20 width={max(x(b) - x(a), 1):.1f} "
            f"height={AXIS_Y - 20} fill='#ffebe9'/><text x={(x(a) + x(b)) / 2:.1f} "
            f"y=16 font-size=11 text-anchor=middle fill='#cf222e'>"
            f"{(b - a) / 1000:.2f} s silent</text>"
        )
    parts += _hidden_silences(timeline, span, x)
    if ttft_ms is not None:
        parts.append(
            f"<line x1={x(ttft_ms):.1f} y1=22 x2={x(ttft_ms):.1f} y2={AXIS_Y} "
            "stroke='#1f6feb' stroke-dasharray='3,3'/><text "
            f"x={x(ttft_ms) - 3:.1f} y=32 font-size=11 fill='#1f6feb' "
            "text-anchor=end>first token</text>"
        )
    for t, kind, n, last in ticks:
        colour, height = STYLE[kind]
        base = AXIS_Y
        if n > 1:  # a group of the downsampled part: a band with its count
            parts.append(
                f"<rect class='tick {kind} group' x={x(t):.1f} y={base - height} "
                f"width={max(x(last) - x(t), 1.5):.1f} height={height} "
                f"fill='{colour}' fill-opacity=0.5><title>{n} frames</title></rect>"
            )
        else:
            w = 2.5 if kind in ("terminal", "error") else 1.2
            parts.append(
                f"<line class='tick {kind}' x1={x(t):.1f} y1={base - height} "
                f"x2={x(t):.1f} y2={base} stroke='{colour}' stroke-width='{w}'/>"
            )
    parts += _read_sizes(ticks, x)
    parts.append(_axis(span, x))
    parts.append("</svg>")
    legend = (
        "".join(f"<span><i class=sw style='background:{c}'></i>{k}</span>" for k, (c, _) in STYLE.items())
        + "<span>&times;N: N frames in one read</span>"
    )
    note = ""
    if timeline.get("frames", 0) > timeline.get("exact_frames", 0):
        note = (
            f" The first {timeline['exact_frames']} frames are exact; the rest are drawn "
            f"as bands of about {timeline['stride']} frames."
        )
    return (
        f"{''.join(parts)}<div class=legend>{legend}</div><p>{timeline['frames']} frames "
        f"(keep-alives included).{note}</p>"
    )


# One stream -------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """Lists, objects, booleans and null as JSON; text as it is."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _kv(rows: list[tuple[str, Any]]) -> str:
    return (
        "<table>"
        + "".join(f"<tr><th>{esc(k)}</th><td class=mono>{esc(_text(v))}</td></tr>" for k, v in rows)
        + "</table>"
    )


_FIELDS = (
    "route",
    "model",
    "upstream",
    "status",
    "outcome",
    "end_reason",
    "request_sent_ms",
    "ttfb_ms",
    "ttft_ms",
    "max_gap_ms",
    "quiet_at_end_ms",
    "client_held_ms",
    "duration_ms",
    "frames",
    "content_frames",
    "keepalives",
    "finish_reasons",
    "usage",
    "done",
    "tool_calls",
    "unterminated_frame",
    "bytes",
    "error",
    "started_at",
)


def stream_page(trace_id: str, doc: dict[str, Any], others: int) -> web.Response:
    rec = doc.get("record", {})
    verdict = doc.get("verdict", {})
    href = "/streams/" + quote(trace_id, safe="")
    reasons = "".join(f"<li>{esc(r)}</li>" for r in verdict.get("reasons") or [])
    anomalies = ", ".join(verdict.get("anomalies") or []) or "none"
    body = [
        f"<p><a href='/'>&larr; recent streams</a></p><h1>Stream <span class=mono>"
        f"{esc(trace_id)}</span></h1>",
        f"<p>outcome {_outcome(verdict.get('outcome'))}; anomalies <span class=anom>"
        f"{esc(anomalies)}</span>; relayed by <span class=mono>{esc(doc.get('instance'))}"
        f"</span></p>",
        f"<ul class=reasons>{reasons}</ul>" if reasons else "<p>Nothing to explain.</p>",
        f"<p>Evidence: <a href='{esc(href)}/evidence'>evidence JSON</a> (for "
        f"<code>sse-audit-proxy evidence-to-case</code>) &middot; <a href='{esc(href)}'>"
        "record JSON</a></p>",
        "<h2>Timeline</h2>",
        timeline_svg(doc.get("timeline"), rec.get("ttft_ms"), _end_ms(rec)),
        "<h2>Record</h2>",
        _kv([(k, rec.get(k)) for k in _FIELDS if k in rec]),
    ]
    if others:
        body.append(f"<p>{others} older record(s) share this trace ID: see the record JSON.</p>")
    request = doc.get("request", {})
    body += [
        "<h2>Request (its shape, never its text)</h2>",
        _kv(
            [(k, v) for k, v in request.items() if k != "shape"]
            + [(f"field {k}", v) for k, v in (request.get("shape") or {}).items()]
        ),
        "<h2>Response head (secrets redacted)</h2>",
        _kv([(n, v) for n, v in doc.get("response", {}).get("headers", [])]),
    ]
    return _page(f"stream {trace_id}", "".join(body))


def add_routes(app: web.Application, source: Source) -> None:
    async def index(request: web.Request) -> web.Response:
        query = read_query(request.query, PAGE_LIMIT, blank_is_unset=True)
        if isinstance(query, list):  # (a mistyped link showed "0 shown", read as "no such streams")
            resp = _page(
                "recent streams",
                "<p><a href='/'>&larr; recent streams</a></p>".join(f"<p>{esc(why)}.</p>" for why in query)
                + "<p>Choose from the lists and fields.</p>",
            )
            resp.set_status(400)
            return resp
        answer = await source.recent(query)
        # Up to 10,000 rows: off the loop, the collector paused, as the JSON answers are.
        return _response(await asyncio.to_thread(uncollected, lambda: list_html(query, answer)))

    async def stream(request: web.Request) -> web.Response:
        trace_id = request.match_info["trace_id"]
        answer = await source.evidence(trace_id, newest_only=True)
        found = answer.get("streams", [])
        if not found:
            missing = unanswered(answer)  # (the JSON lookups' 503: the record may be there)
            resp = _page(
                "not found",
                f"<p><a href='/'>&larr; recent streams</a></p><p>No "
                f"record of trace ID <span class=mono>{esc(trace_id)}</span> among the "
                + (
                    f"answers of the workers; {missing} did not answer in time and may hold it: reload.</p>"
                    if missing
                    else "most recent streams (see --recent-streams).</p>"
                ),
            )
            resp.set_status(503 if missing else 404)
            return resp
        return stream_page(trace_id, found[0], answer.get("held", len(found)) - 1)

    app.router.add_get("/", index)
    app.router.add_get("/ui", index)
    app.router.add_get("/ui/streams/{trace_id:.+}", stream)
