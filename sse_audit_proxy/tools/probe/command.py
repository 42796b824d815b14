"""`sse-audit-proxy probe`: the streaming readiness checklist against a route, with evidence."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from yarl import URL

from sse_audit_proxy.cli.options import (
    add_key_header_option,
    base_url,
    breaks_a_header,
    env_var_name,
    positive_float,
    request_header_no_key,
    upstream_url,
)
from sse_audit_proxy.server import loop
from sse_audit_proxy.tools import output_file
from sse_audit_proxy.tools.probe import report
from sse_audit_proxy.tools.probe.runner import RouteRun, Settings, Target, probe_route

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
SIDE_HEADER = "X-SSE-Audit-Side"


class UsageError(Exception):
    """Bad flags or environment: one line on stderr, exit status 2."""


@dataclass(slots=True, frozen=True)
class Plan:
    settings: Settings
    targets: tuple[Target, ...]
    run_id: str
    key_env: str
    json_path: Path | None = None
    raw_dir: Path | None = None


def _metrics_url(value: str) -> URL:
    return upstream_url(value)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "probe",
        help="run the streaming readiness checklist against a route",
        description="Sends a few deterministic requests to an OpenAI-compatible route and "
        "judges them gate by gate (route, framing, streaming, usage, tools, cancellation), "
        "with the evidence. Exit 0 only when every gate that ran passed.",
    )
    p.add_argument(
        "--base-url",
        type=base_url,
        required=True,
        metavar="URL",
        help="OpenAI base URL of the route, e.g. https://gateway.example/v1 (/v1 is "
        "added to a URL without a path)",
    )
    p.add_argument("--model", required=True, help="model name to ask for")
    p.add_argument(
        "--api-key-env",
        metavar="NAME",
        type=env_var_name,
        default=None,
        help=f"environment variable holding the API key, sent as a Bearer token or in "
        f"--api-key-header (default: {DEFAULT_KEY_ENV}, and no key when it is unset); the key is "
        "never taken on the command line, printed or saved",
    )
    add_key_header_option(p)
    p.add_argument(
        "--tools",
        action="store_true",
        help="also check streamed tool calls, the follow-up with the tool result, "
        "and text with tools offered",
    )
    p.add_argument(
        "--responses", action="store_true", help="also run every gate on the Responses API (/responses)"
    )
    p.add_argument(
        "--compare-base-url",
        type=base_url,
        metavar="URL",
        default=None,
        help="run the same gates against this route too and show the differences "
        "(e.g. the current route, to prove the rollback)",
    )
    p.add_argument(
        "--compare-api-key-env",
        metavar="NAME",
        type=env_var_name,
        default=None,
        help="environment variable holding the API key of the --compare-base-url route. "
        "Without it, that route gets the --api-key-env key only when it is on the same host "
        "and port as --base-url: a key is never sent to another host unless named for it",
    )
    p.add_argument(
        "--side",
        metavar="NAME",
        default=None,
        help="through an sse-audit-proxy running a canary: send every request to "
        "this side (e.g. canary), by the --side-header the proxy honours",
    )
    p.add_argument(
        "--compare-side",
        metavar="NAME",
        default=None,
        help="run the same gates on this side too (e.g. baseline), through the same "
        "proxy unless --compare-base-url, and show the differences",
    )
    p.add_argument(
        "--side-header",
        metavar="NAME",
        default=SIDE_HEADER,
        help="the header naming the side; the proxy honours it only when started "
        f"with --canary-side-header NAME (default: {SIDE_HEADER})",
    )
    p.add_argument(
        "--proxy-metrics-url",
        type=_metrics_url,
        metavar="URL",
        default=None,
        help="metrics port of the sse-audit-proxy at --base-url (e.g. "
        "http://127.0.0.1:9464): the cancellation gate then confirms the proxy "
        "recorded client_disconnect",
    )
    p.add_argument(
        "--compare-proxy-metrics-url",
        type=_metrics_url,
        metavar="URL",
        default=None,
        help="the same for the proxy at --compare-base-url",
    )
    p.add_argument(
        "--json",
        metavar="FILE",
        default=None,
        help="write the full report (every measurement, every trace ID) as JSON",
    )
    p.add_argument(
        "--save-raw",
        metavar="DIR",
        default=None,
        help="save each response body exactly as received, with its request, headers and read times, in DIR",
    )
    p.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        type=request_header_no_key,
        help="extra request header, repeatable (not for the API key)",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="seconds without a byte (keep-alive comments count: a reasoning model may think for "
        "minutes behind them) before a request counts as stalled; a request, or a stream of "
        "keep-alives alone, takes at most 10 times this in all (default: 60)",
    )
    p.set_defaults(run=run)


def plan_from(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str] = os.environ) -> Plan:
    key_env = args.api_key_env or DEFAULT_KEY_ENV
    api_key = _key_from(environ, key_env, "--api-key-env", named=bool(args.api_key_env))
    compare_key = api_key
    # The candidate's key and credential headers sent to the current route's host hand one
    # party's secrets to another (an outside review): another host gets a key only when one is
    # named for it, and no secret-named -H header.
    elsewhere = args.compare_base_url is not None and _where(args.compare_base_url) != _where(args.base_url)
    if args.compare_api_key_env:
        if args.compare_base_url is None:
            raise UsageError("--compare-api-key-env needs --compare-base-url")
        compare_key = _key_from(environ, args.compare_api_key_env, "--compare-api-key-env", named=True)
    elif elsewhere:
        compare_key = None
    if args.api_key_header.lower() == args.side_header.lower():
        raise UsageError(f"--api-key-header {args.api_key_header} is the --side-header")
    if args.compare_proxy_metrics_url and not args.compare_base_url:
        raise UsageError("--compare-proxy-metrics-url needs --compare-base-url")
    for flag, value in (("--side", args.side), ("--compare-side", args.compare_side)):
        if value is not None and not value.strip():
            raise UsageError(f"{flag} needs a side name, e.g. canary or baseline")
    json_path = Path(args.json) if args.json else None
    if json_path is not None and (why := output_file.problem(json_path)):
        raise UsageError(f"--json {args.json}: {why}")
    raw_dir = Path(args.save_raw) if args.save_raw else None
    if raw_dir is not None:
        try:
            raw_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--save-raw {args.save_raw}: {exc.strerror or exc}") from None
        if not _writable_dir(raw_dir):
            raise UsageError(f"--save-raw {args.save_raw}: not a writable directory")
    run_id = os.urandom(3).hex()
    settings = Settings(
        model=args.model,
        tools=args.tools,
        responses=args.responses,
        headers=tuple(args.header),
        api_key=api_key,
        key_header=args.api_key_header,
        timeout=args.timeout,
    )
    prefix = f"probe-{run_id}"

    def side(name: str | None) -> tuple[tuple[str, str], ...]:
        return () if name is None else ((args.side_header, name),)

    if args.compare_base_url is None and args.compare_side is None:
        targets: tuple[Target, ...] = (
            Target(
                "base", args.base_url, prefix, args.proxy_metrics_url, side(args.side), args.side, api_key
            ),
        )
    else:
        # --compare-side alone: the other side through the same proxy.
        compare_url = args.compare_base_url or args.base_url
        compare_metrics = args.compare_proxy_metrics_url or (
            args.proxy_metrics_url if args.compare_base_url is None else None
        )
        targets = (
            Target(
                "base",
                args.base_url,
                f"{prefix}-base",
                args.proxy_metrics_url,
                side(args.side),
                args.side,
                api_key,
            ),
            Target(
                "compare",
                compare_url,
                f"{prefix}-compare",
                compare_metrics,
                side(args.compare_side),
                args.compare_side,
                compare_key,
                elsewhere,
            ),
        )
    return Plan(settings, targets, run_id, key_env, json_path, raw_dir)


def _where(url: URL) -> tuple[str, str | None, int | None]:
    """Scheme, host and port, the default port filled in (`:80` is the same place as none)."""
    return url.scheme, url.host, url.port


def _key_from(environ: Mapping[str, str], name: str, flag: str, *, named: bool) -> str | None:
    key = environ.get(name) or None
    if named and key is None:
        raise UsageError(f"environment variable {name} ({flag}) is not set or empty")
    if key is not None and breaks_a_header(key):
        raise UsageError(f"environment variable {name} holds a line break or NUL: not a key")
    return key


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK)


def run(args: argparse.Namespace) -> int:
    try:
        plan = plan_from(args)
    except UsageError as exc:
        print(f"sse-audit-proxy: error: {exc}", file=sys.stderr)
        return 2
    return loop.run(probe(plan, sys.stdout))


async def probe(plan: Plan, out: TextIO) -> int:
    return finish(plan, await probe_routes(plan), out, report.colour_on(out))


async def probe_routes(plan: Plan) -> list[RouteRun]:
    """Every target in turn: side by side means the same checks, not the same moment."""
    return [await probe_route(target, plan.settings) for target in plan.targets]


def finish(plan: Plan, runs: Sequence[RouteRun], out: TextIO, colour: bool) -> int:
    """Write the captures and the report, print the table; the exit status."""
    # Every route's key (--compare-api-key-env's too) is scrubbed from everything written.
    redactor = report.Redactor(
        plan.settings.api_key, plan.settings.headers, *(t.api_key for t in plan.targets)
    )
    captures = None
    if plan.raw_dir is not None:
        captures = report.save_raw(plan.raw_dir, runs, redactor)
    unwritten = None
    if plan.json_path is not None:
        doc = report.report_dict(runs, plan.settings, plan.run_id, plan.key_env, captures)
        unwritten = output_file.write(plan.json_path, report.render_json(doc, redactor))
    text = report.render_text(
        runs,
        plan.settings,
        plan.run_id,
        plan.key_env,
        colour,
        str(plan.json_path) if plan.json_path and unwritten is None else None,
        str(plan.raw_dir) if plan.raw_dir else None,
    )
    out.write(redactor.text(text))
    out.flush()
    if unwritten is not None:
        print(f"sse-audit-proxy: error: --json {plan.json_path}: {unwritten}", file=sys.stderr)
        return 2
    return report.exit_code(runs)
