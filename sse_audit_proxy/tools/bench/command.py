"""`sse-audit-proxy bench`: direct to the demo gateway versus through the proxy, in one run."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from sse_audit_proxy import __version__
from sse_audit_proxy.cli.options import port, positive_int, upstream_url
from sse_audit_proxy.tools import output_file
from sse_audit_proxy.tools.bench import nginx, procs
from sse_audit_proxy.tools.bench.harness import Harness, Target
from sse_audit_proxy.tools.bench.report import (
    DIRECT,
    cpu_ratios_by_repeat,
    headline,
    headline_table,
    spread_lines,
    summarize,
    table,
)
from sse_audit_proxy.tools.bench.workloads import FULL, LATENCY, NAMES, SMOKE


def _names(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(NAMES)}: {value!r}")
    return names


def _counts(value: str) -> tuple[int, ...]:
    return tuple(dict.fromkeys(positive_int(n.strip()) for n in value.split(",") if n.strip()))


def _source(value: str) -> str:
    path = Path(value).resolve()
    if not (path / "sse_audit_proxy" / "__main__.py").is_file():
        raise argparse.ArgumentTypeError(f"no sse_audit_proxy package in {value!r}")
    return str(path)


def _against(value: str) -> tuple[str, str]:
    """`URL`, `NAME=URL`, or `nginx` (the bench starts nginx itself: no URL)."""
    if value.strip() == nginx.NAME:
        return nginx.NAME, ""
    name, sep, url = value.partition("=")
    if not sep or "://" in name:
        name, url = "", value
    return name.strip(), str(upstream_url(url.strip()))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure the proxy's added latency, throughput and memory",
        description="Start the demo gateway, the proxy and a load generator as separate "
        "processes on 127.0.0.1, and measure each workload directly against the gateway and "
        "through the proxy (and through any --against proxy), in the same run. Prints a "
        "table of medians over the repeats and writes every run to a JSON file.",
    )
    p.add_argument(
        "--workloads",
        type=_names,
        default=NAMES,
        metavar="LIST",
        help=f"comma-separated, from {', '.join(NAMES)} (default: all)",
    )
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=3,
        help="runs of each workload per target; the table shows medians (default: 3)",
    )
    p.add_argument(
        "--workers",
        type=_counts,
        default=(1,),
        metavar="N[,N...]",
        help="proxy worker counts to measure, e.g. 1,2 for scaling (default: 1)",
    )
    p.add_argument(
        "--against",
        type=_against,
        action="append",
        default=[],
        metavar="[NAME=]URL|nginx",
        help="another proxy to put in the table; it must forward to the demo gateway "
        "(fix its port with --gateway-port). `nginx` alone: the bench starts nginx "
        "itself for each run, as a pass-through to its gateway (config in "
        "docs/tools/bench.md). Repeatable",
    )
    p.add_argument(
        "--against-pid",
        type=positive_int,
        action="append",
        default=[],
        metavar="PID",
        help="the process of the matching --against URL proxy, in "
        "order (its children are counted too), for its CPU and memory. Repeatable",
    )
    p.add_argument(
        "--baseline",
        type=_source,
        metavar="DIR",
        help="also run the proxy from the sse_audit_proxy package in DIR (another "
        "checkout, e.g. `git worktree add /tmp/main main`), started and measured "
        "exactly like this one: a before/after comparison in one run",
    )
    p.add_argument(
        "--gateway-port", type=port, default=0, help="port of the demo gateway (default: any free port)"
    )
    p.add_argument("--clients", type=positive_int, default=2, help="load-generator processes (default: 2)")
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin the proxy (and an --against proxy given its --against-pid) to the "
        "last CPU(s), one per worker, and the gateway and clients to the others "
        "(Linux sched_setaffinity)",
    )
    p.add_argument(
        "--at-once",
        action="store_true",
        help="the latency workload through every target at the same moment, each on the "
        "proxy's CPUs, rather than one after another: on a shared machine the ratios of CPU "
        "per paced frame then hold still from repeat to repeat (latency figures then include "
        "the other targets' load on those CPUs)",
    )
    p.add_argument(
        "--latency-frames",
        type=positive_int,
        metavar="N",
        help="tokens per stream in the latency workload (default: 200; --smoke: its own). "
        "Two runs, e.g. 20 and 200, part a target's CPU per stream (set-up, record, end) from "
        "its CPU per frame",
    )
    p.add_argument(
        "--json",
        default="sse-audit-bench.json",
        metavar="PATH",
        help="where to write every run and the medians, checked before the run (default: "
        "sse-audit-bench.json)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny workloads and one repeat: checks that the benchmark works, not how fast anything is",
    )
    p.set_defaults(run=run)


def targets_from(args: argparse.Namespace) -> list[Target]:
    targets = [Target(DIRECT, "direct")]
    for n in args.workers:
        targets.append(Target("proxy" if n == 1 else f"proxy x{n}", "proxy", workers=n))
    if args.baseline:
        targets.append(Target("baseline", "proxy", workers=args.workers[0], source=args.baseline))
    urls = 0
    for i, (name, url) in enumerate(args.against):
        if name == nginx.NAME and not url:
            targets.append(Target(nginx.NAME, "nginx"))
            continue
        pid = args.against_pid[urls] if urls < len(args.against_pid) else None
        urls += 1
        targets.append(Target(name or f"against{i + 1}", "against", url=url, pid=pid))
    return targets


def run(args: argparse.Namespace) -> int:
    if not sys.platform.startswith("linux"):
        print("sse-audit-proxy: error: bench reads /proc: Linux only", file=sys.stderr)
        return 2
    if len(args.against_pid) > sum(1 for _, url in args.against if url):
        print("sse-audit-proxy: error: more --against-pid than --against URLs", file=sys.stderr)
        return 2
    if any(name == nginx.NAME and not url for name, url in args.against) and not nginx.find():
        print(
            f"sse-audit-proxy: error: --against nginx: nginx is not installed ({nginx.INSTALL_HINT})",
            file=sys.stderr,
        )
        return 2
    if args.at_once and LATENCY not in args.workloads:
        print(
            "sse-audit-proxy: error: --at-once applies to the latency workload: add it to --workloads",
            file=sys.stderr,
        )
        return 2
    repeats = 1 if args.smoke else args.repeats
    workloads = SMOKE if args.smoke else FULL
    if args.latency_frames is not None:
        w = workloads[LATENCY]
        took = w.open_over + args.latency_frames * w.interval_ms / 1000.0  # the last stream's end
        workloads = {
            **workloads,
            LATENCY: replace(w, frames=args.latency_frames, timeout=max(w.timeout, took * 1.5 + 10.0)),
        }
    targets = targets_from(args)
    names = [t.name for t in targets]
    if len(set(names)) < len(names):
        print(f"sse-audit-proxy: error: two targets named alike: {', '.join(names)}", file=sys.stderr)
        return 2
    if why := output_file.problem(Path(args.json)):
        print(f"sse-audit-proxy: error: --json {args.json}: {why}", file=sys.stderr)
        return 2
    procs.raise_open_files_limit()
    started = time.time()
    load_before = procs.load_average()
    try:
        harness = Harness(pin=args.pin, clients=args.clients, gateway_port=args.gateway_port)
    except procs.StartFailed as exc:
        print(f"sse-audit-proxy: error: {exc}", file=sys.stderr)
        return 1
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        print(
            f"demo gateway at {harness.gateway.url}; {len(targets)} targets, "
            f"{repeats} repeat(s); load average {load_before[0]:.2f}",
            file=sys.stderr,
        )
        for name in args.workloads:
            workload = workloads[name]
            results[name] = {t.name: [] for t in targets}
            for r in range(repeats):
                # Each repeat starts one target further on: no target always runs first, or
                # always right after another one.
                turn = targets[r % len(targets) :] + targets[: r % len(targets)]
                if args.at_once and name == LATENCY:
                    for target_name, run_ in harness.run_at_once(workload, turn).items():
                        results[name][target_name].append(run_)
                        _progress(name, r, target_name, run_)
                    continue
                for target in turn:
                    if name != "memory" or target.kind != "direct":
                        run_ = harness.run(workload, target)
                        results[name][target.name].append(run_)
                        _progress(name, r, target.name, run_)
    except (procs.StartFailed, TimeoutError) as exc:
        print(f"sse-audit-proxy: error: {exc}", file=sys.stderr)
        return 1
    finally:
        harness.close()
    summary = summarize(results, targets)
    head = headline(summary, targets)
    head["cpu_vs_reference_by_repeat"] = by_repeat = cpu_ratios_by_repeat(results, head["reference"])
    load_after = procs.load_average()
    report: dict[str, Any] = {
        "command": ["sse-audit-proxy", *sys.argv[2:]] if sys.argv[1:2] == ["bench"] else None,
        "version": __version__,
        "started_at": started,
        "duration_s": round(time.time() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "options": {
            "repeats": repeats,
            "smoke": args.smoke,
            "pin": args.pin,
            "clients": args.clients,
            "workers": list(args.workers),
            "at_once": args.at_once,
        },
        "workloads": {n: _describe(workloads[n]) for n in args.workloads},
        "targets": [
            {
                "name": t.name,
                "kind": t.kind,
                "url": t.url,
                "workers": t.workers,
                "pid": t.pid,
                "source": t.source,
            }
            for t in targets
        ],
        "headline": head,
        "summary": summary,
        "runs": results,
    }
    unwritten = output_file.write(Path(args.json), orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(headline_table(head))
    print()
    print(table(summary, targets))
    print(
        f"\nmedians of {repeats} repeat(s); load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after; pinned: {'yes' if args.pin else 'no'}"
        + ("" if unwritten else f"; every run in {args.json}")
        + (
            "; latency: all targets at once (its added latency includes the other targets' load)"
            if args.at_once
            else ""
        )
    )
    for line in spread_lines(by_repeat, head["reference"]):
        print(line)
    failed = sum(r["streams_failed"] for by in results.values() for runs in by.values() for r in runs)
    if failed:
        print(f"warning: {failed} stream(s) failed; see `errors` in {args.json}", file=sys.stderr)
    gone = sorted(
        {r["target"] for by in results.values() for runs in by.values() for r in runs if r.get("target_gone")}
    )
    if gone:
        print(
            f"warning: a process of {', '.join(gone)} ended during a run: its CPU there is left out",
            file=sys.stderr,
        )
    if unwritten is not None:
        print(f"sse-audit-proxy: error: --json {args.json}: {unwritten}", file=sys.stderr)
        return 2
    return 0


def _describe(w: Any) -> dict[str, Any]:
    return {k: getattr(w, k) for k in w.__slots__}


def _progress(workload: str, repeat: int, target: str, run_: dict[str, Any]) -> None:
    keys = ("latency_p99_ms", "frames_per_s", "frames_per_core_s", "rss_per_stream_kib")
    shown = ", ".join(f"{k}={run_[k]}" for k in keys if run_.get(k) is not None)
    print(
        f"  {workload} #{repeat + 1} {target}: {run_['streams_ok']}/{run_['streams']} streams"
        f"{', ' + shown if shown else ''} (load {run_['load_average'][0]:.2f})",
        file=sys.stderr,
    )
