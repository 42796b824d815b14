"""What the probe hands back: the table, the JSON report, the raw captures, the comparison.

Everything written goes through `Redactor` last, so the API key cannot reach a terminal or a
file even when a gateway echoes it back in a header or a body.
"""

from __future__ import annotations

import os
import re
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from sse_audit_proxy import __version__
from sse_audit_proxy.core.audit import StreamResult
from sse_audit_proxy.core.figures import ms as millis
from sse_audit_proxy.core.inflate import coding
from sse_audit_proxy.tools.probe.chat import ChatApi
from sse_audit_proxy.tools.probe.client import (
    REDACTED,
    Exchange,
    is_secret_header,
    shown_headers,
    shown_response_headers,
)
from sse_audit_proxy.tools.probe.gates import GATES, Gate, Status, ms, usage_text
from sse_audit_proxy.tools.probe.responses import ResponsesApi
from sse_audit_proxy.tools.probe.runner import RouteRun, Settings
from sse_audit_proxy.tools.terminal import printable

USAGE_KEYS = {api.name: api.usage_keys for api in (ChatApi, ResponsesApi)}
_COLOURS = {Status.PASS: "\x1b[32m", Status.FAIL: "\x1b[31;1m", Status.SKIP: "\x1b[33m"}
_RESET = "\x1b[0m"


class Redactor:
    """Replaces the API key and the values of secret-named `-H` headers wherever they would be
    written: as sent, and as JSON may write them back (any character as a `\\uXXXX` escape,
    `/` as `\\/`), for a gateway that echoes a key in an error body."""

    def __init__(
        self, secret: str | None, headers: Sequence[tuple[str, str]] = (), *more: str | None
    ) -> None:
        # A short value (`Cookie: a=1`, a key of `true`) is hidden where it is shown, not
        # searched for: replaced everywhere, it broke the report's JSON.
        secrets = {v for n, v in headers if is_secret_header(n)}
        secrets.update(s for s in (secret, *more) if s)
        secrets = {v for v in secrets if len(v) >= MIN_SEARCHED}
        secrets |= {quote(v, safe="") for v in secrets}  # as a URL echoed back writes it
        forms = [_escaped_form(s) for s in sorted(secrets, key=len, reverse=True)]
        self._text = re.compile("|".join(forms)) if forms else None
        self._data = re.compile("|".join(forms).encode()) if forms else None

    def text(self, value: str) -> str:
        return self._text.sub(REDACTED, value) if self._text is not None else value

    def data(self, value: bytes) -> bytes:
        return self._data.sub(REDACTED.encode(), value) if self._data is not None else value


MIN_SEARCHED = 8  # characters of a secret header's value before the report is searched for it


def _escaped_form(secret: str) -> str:
    """A pattern for `secret` with each character as it is or as JSON may escape it."""
    parts = []
    for ch in secret:
        code = f"{ord(ch):04x}"
        hex_any = "".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in code)
        forms = [re.escape(ch), rf"\\u{hex_any}"]
        if ch in '"\\/':
            forms.append(re.escape("\\" + ch))
        parts.append(f"(?:{'|'.join(forms)})")
    return "".join(parts)


def iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"


# Counting -----------------------------------------------------------------------------------


def tally(runs: Sequence[RouteRun]) -> dict[str, int]:
    out = {s.value: 0 for s in Status}
    for run in runs:
        for gate in run.gates:
            out[gate.status.value] += 1
    return out


def exit_code(runs: Sequence[RouteRun]) -> int:
    return 1 if any(run.failed for run in runs) else 0


# The JSON report ----------------------------------------------------------------------------


def _audit(r: StreamResult | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "outcome": r.outcome.value,
        "anomalies": list(r.anomalies),
        "end_reason": r.end.value,
        "ttfb_ms": millis(r.ttfb),
        "ttft_ms": millis(r.ttft),
        "max_gap_ms": millis(r.max_gap),
        "duration_ms": millis(r.duration),
        "frames": r.frames,
        "content_frames": r.content_frames,
        "keepalives": r.keepalives,
        "bytes": r.bytes,
        "done": r.done,
        "finish_reasons": r.finish_reasons,
        "usage": r.usage,
        "tool_calls": r.tool_calls,
        "unterminated_frame": r.unterminated_frame,
    }


def exchange_dict(ex: Exchange, capture: str | None = None) -> dict[str, Any]:
    return {
        "trace_id": ex.trace_id,
        "api": ex.api,
        "purpose": ex.purpose,
        "started_at": iso(ex.started_at),
        "request": {"method": "POST", "url": ex.url, "headers": ex.request_headers, "body": ex.request_body},
        "response": {
            "status": ex.status,
            "reason": ex.reason,
            "headers": shown_response_headers(ex.response_headers),
            "request_id": ex.request_id,
            "trace_id_echoed": ex.trace_echoed,
        },
        "headers_ms": millis(ex.headers_at),
        "duration_ms": millis(ex.duration),
        "bytes": ex.raw_bytes,
        "reads": len(ex.chunks),
        "data_frames": len(ex.events),
        "keepalives": ex.keepalives,
        "end": ex.end.value,
        "error": ex.error,
        "cancelled_after_frames": ex.cancelled_after,
        "audit": _audit(ex.result),
        "proxy_record": ex.proxy_record,
        "capture": capture,
    }


def gate_dict(gate: Gate) -> dict[str, Any]:
    return {
        "gate": gate.name,
        "api": gate.api,
        "status": gate.status.value,
        "summary": gate.summary,
        "problems": gate.problems,
        "notes": gate.notes,
        "trace_ids": gate.trace_ids,
        "evidence": gate.evidence,
    }


def report_dict(
    runs: Sequence[RouteRun],
    settings: Settings,
    run_id: str,
    key_env: str,
    captures: dict[str, str] | None = None,
) -> dict[str, Any]:
    counts = tally(runs)
    doc: dict[str, Any] = {
        "probe": {
            "version": __version__,
            "run_id": run_id,
            "trace_id_prefix": f"probe-{run_id}",
            "started_at": iso(min(r.started_at for r in runs)),
            "model": settings.model,
            "apis": ["chat", *(["responses"] if settings.responses else [])],
            "tools": settings.tools,
            "timeout_s": settings.timeout,
            "headers": shown_headers(settings.headers),
            "api_key_env": key_env,
            "api_key_sent": settings.api_key is not None,
        },
        "result": "fail" if counts["fail"] else "pass",
        "exit_code": exit_code(runs),
        "gates": counts,
        "routes": [
            {
                "label": run.target.label,
                "base_url": str(run.target.base_url),
                "side": run.target.side,
                "api_key_sent": run.target.api_key is not None,
                "proxy_metrics_url": (
                    str(run.target.proxy_metrics_url) if run.target.proxy_metrics_url else None
                ),
                "duration_s": round(run.duration, 3),
                "result": "fail" if run.failed else "pass",
                "gates": [gate_dict(g) for g in run.gates],
                "requests": [exchange_dict(e, (captures or {}).get(e.trace_id)) for e in run.exchanges],
            }
            for run in runs
        ],
    }
    if len(runs) == 2:
        doc["comparison"] = comparison(runs[0], runs[1])
    return doc


def render_json(doc: dict[str, Any], redactor: Redactor) -> bytes:
    return redactor.data(orjson.dumps(doc, option=orjson.OPT_INDENT_2)) + b"\n"


# Raw captures -------------------------------------------------------------------------------


def save_raw(directory: Path, runs: Sequence[RouteRun], redactor: Redactor) -> dict[str, str]:
    """Per request: the body exactly as received (`.sse`, or `.json` when not a stream; with
    `.gz` / `.deflate` when the route compressed it) and `.meta.json` with the request, the
    response head and each read's arrival time and size. Returns trace ID -> body file name."""
    directory.mkdir(parents=True, exist_ok=True)
    saved: dict[str, str] = {}
    for run in runs:
        for ex in run.exchanges:
            ext = ".sse" if ex.is_sse else ".json"
            encoding = coding(ex.header("Content-Encoding") or "")
            body = b"".join(c for _, c in ex.chunks)
            decoded = _decoded(body, encoding)
            if decoded is not None and redactor.data(decoded) != decoded:
                # A secret inside the compressed bytes, which no search of them finds: the
                # body is kept decoded, and scrubbed.
                body, encoding = redactor.data(decoded), ""
            else:
                decoded = None
                body = redactor.data(body)
            ext += {"gzip": ".gz", "x-gzip": ".gz", "deflate": ".deflate"}.get(encoding, "")
            name = ex.trace_id + ext
            (directory / name).write_bytes(body)
            meta = exchange_dict(ex, name)
            meta["reads_at"] = [[round(t, 6), len(c)] for t, c in ex.chunks]
            meta["capture_cut"] = ex.capture_cut
            meta["capture_decoded"] = decoded is not None
            (directory / f"{ex.trace_id}.meta.json").write_bytes(render_json(meta, redactor))
            saved[ex.trace_id] = name
    return saved


MAX_DECODED = 64 << 20  # a capture's decoded size, at most (a small body can expand a lot)


def _decoded(body: bytes, encoding: str) -> bytes | None:
    """A gzip or deflate body decoded (None: not compressed so, or not decodable)."""
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return None
    for wbits in (47, -15):  # gzip or zlib by their headers; raw deflate
        inflater = zlib.decompressobj(wbits)
        try:
            return inflater.decompress(body, MAX_DECODED)
        except zlib.error:
            continue
    return None


# Comparison ---------------------------------------------------------------------------------


def _finishes(run: RouteRun, api: str) -> list[str]:
    out = []
    control = run.exchange(api, "control")
    out.append((control.answer.finish if control and control.answer else None) or "-")
    for purpose in ("stream", "tool-call"):
        ex = run.exchange(api, purpose)
        if ex is not None:
            out.append((",".join(ex.facts.finish_reasons) if ex.facts else "") or "-")
    return out


def _ttft(run: RouteRun, api: str) -> float | None:
    ex = run.exchange(api, "stream")
    return ex.result.ttft if ex and ex.result else None


def _usage(run: RouteRun, api: str, streamed: bool) -> dict[str, Any] | None:
    if streamed:
        ex = run.exchange(api, "stream")
        return ex.facts.usage if ex and ex.facts else None
    ex = run.exchange(api, "control")
    return ex.answer.usage if ex and ex.answer else None


def comparison(a: RouteRun, b: RouteRun) -> list[dict[str, Any]]:
    """Side by side, per API: time to first token, usage, finish reasons and gate results."""
    rows: list[dict[str, Any]] = []
    for api in dict.fromkeys(g.api for g in a.gates):
        keys = USAGE_KEYS.get(api, USAGE_KEYS["chat"])
        ta, tb = _ttft(a, api), _ttft(b, api)
        rows.append(
            {
                "api": api,
                "what": "ttft_ms",
                "base": millis(ta),
                "compare": millis(tb),
                "delta_ms": millis(tb - ta) if ta is not None and tb is not None else None,
                "differs": None,
            }
        )
        for streamed in (False, True):
            ua, ub = _usage(a, api, streamed), _usage(b, api, streamed)
            pick = [{k: (u or {}).get(k) for k in keys} for u in (ua, ub)]
            rows.append(
                {
                    "api": api,
                    "what": "usage_streamed" if streamed else "usage",
                    "base": pick[0],
                    "compare": pick[1],
                    "differs": pick[0] != pick[1],
                }
            )
        fa, fb = _finishes(a, api), _finishes(b, api)
        rows.append({"api": api, "what": "finish_reasons", "base": fa, "compare": fb, "differs": fa != fb})
        for name in GATES:
            ga, gb = a.gate(name, api), b.gate(name, api)
            sa, sb = (g.status.value if g else None for g in (ga, gb))
            rows.append({"api": api, "what": f"gate {name}", "base": sa, "compare": sb, "differs": sa != sb})
    return rows


def _cell(row: dict[str, Any], side: str) -> str:
    value = row[side]
    what = row["what"]
    if what == "ttft_ms":
        text = ms(None if value is None else value / 1000)
        if side == "compare" and row.get("delta_ms") is not None:
            text += f" ({row['delta_ms']:+.0f}ms)"
        return text
    if what.startswith("usage"):
        keys = tuple(value)
        return usage_text(value, keys) if any(v is not None for v in value.values()) else "none"
    if what == "finish_reasons":
        return " / ".join(value)
    return str(value or "-").upper() if what.startswith("gate") else str(value)


# The table ----------------------------------------------------------------------------------


def colour_on(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def _status(status: Status | str | None, colour: bool) -> str:
    if status is None:
        return "-"
    status = Status(status)
    word = status.value.upper()
    return f"{_COLOURS[status]}{word}{_RESET}" if colour else word


def table(rows: Sequence[Sequence[str]], widths_of: Sequence[Sequence[str]] | None = None) -> str:
    """Left-aligned columns; `widths_of` gives the cells' printed widths (colour codes aside)."""
    plain = widths_of or rows
    widths = [max(len(r[i]) for r in plain) for i in range(len(plain[0]))]
    lines = []
    for row, bare in zip(rows, plain, strict=True):
        cells = [c + " " * (w - len(b)) for c, b, w in zip(row, bare, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_text(
    runs: Sequence[RouteRun],
    settings: Settings,
    run_id: str,
    key_env: str,
    colour: bool = False,
    json_path: str | None = None,
    raw_dir: str | None = None,
) -> str:
    apis = " + ".join(["chat", *(["responses"] if settings.responses else [])])
    head = [
        f"sse-audit-proxy probe · run {run_id} · model {printable(settings.model)} · {apis}"
        + (" · tools" if settings.tools else "")
    ]
    if not settings.api_key:
        head.append(f"(no API key sent: {key_env} is not set)")
    elif any(run.target.api_key is None for run in runs):
        head.append(
            "(no API key sent to the compare route: it is on another host; name its key with "
            "--compare-api-key-env)"
        )
    if any(run.target.elsewhere for run in runs) and any(is_secret_header(n) for n, _ in settings.headers):
        head.append("(-H headers with a secret's name not sent to the compare route: it is on another host)")
    out = ["\n".join(head)]
    out += [_single_table(run, colour, len(runs) > 1) for run in runs]
    if len(runs) == 2:
        out.append(_differences(runs[0], runs[1]))
    details = _details(runs)
    if details:
        out.append(details)
    counts = tally(runs)
    verdict = _status(Status.FAIL if counts["fail"] else Status.PASS, colour)
    tail = (
        f"result: {verdict} · {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['skip']} skipped · trace IDs start with probe-{run_id}"
    )
    if json_path:
        tail += f" · report {json_path}"
    if raw_dir:
        tail += f" · raw captures in {raw_dir}"
    out.append(tail)
    return "\n\n".join(out) + "\n"


def _single_table(run: RouteRun, colour: bool, labelled: bool = False) -> str:
    header = ("gate", "api", "result", "evidence")
    rows = [header]
    plain = [header]
    for g in run.gates:
        word = g.status.value.upper()
        summary = printable(g.summary)  # upstream text (models, finish reasons, errors)
        rows.append((g.name, g.api, _status(g.status, colour), summary))
        plain.append((g.name, g.api, word, summary))
    label = f"{run.target.label} " if labelled else ""
    return f"{label}route {_where(run)}\n" + table(rows, plain)


def _where(run: RouteRun) -> str:
    """The route, and the proxy side it was sent to (`probe --side`)."""
    side = f" (side {run.target.side})" if run.target.side else ""
    return printable(f"{run.target.base_url}{side}")


_MEASURES = {
    "ttft_ms": "ttft (stream)",
    "usage": "usage (non-streamed)",
    "usage_streamed": "usage (streamed)",
    "finish_reasons": "finish (plain / stream / tool call)",
}


def _differences(a: RouteRun, b: RouteRun) -> str:
    """Time to first token, usage and finish reasons side by side, and gates that differ."""
    rows = [("api", "measure", a.target.label, b.target.label, "")]
    for row in comparison(a, b):
        if row["what"].startswith("gate") and not row["differs"]:
            continue
        rows.append(
            (
                row["api"],
                _MEASURES.get(row["what"], row["what"]),
                printable(_cell(row, "base")),
                printable(_cell(row, "compare")),
                "differs" if row["differs"] else "",
            )
        )
    return f"differences: {a.target.label} {_where(a)} vs {b.target.label} {_where(b)}\n" + table(rows)


def _details(runs: Sequence[RouteRun]) -> str:
    blocks = []
    for run in runs:
        where = f" on {run.target.label}" if len(runs) > 1 else ""
        for g in run.gates:
            if g.status is Status.SKIP or not (g.problems or g.notes):
                continue
            traces = f" · trace {', '.join(g.trace_ids)}" if g.trace_ids else ""
            lines = [f"{g.status.value.upper()} {g.name} ({g.api}){where}{traces}"]
            # Problems and notes quote the upstream (an error message, a header): printed as
            # they came, its escape sequences would redraw the terminal (a forged verdict).
            lines += [f"  - {printable(p)}" for p in g.problems]
            lines += [f"  note: {printable(n)}" for n in g.notes]
            blocks.append("\n".join(lines))
    return "\n".join(blocks)
