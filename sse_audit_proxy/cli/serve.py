"""`sse-audit-proxy serve`: run the proxy until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import difflib
import errno
import functools
import ipaddress
import os
import re
import resource
import socket
import ssl
import sys

import structlog
from yarl import URL

from sse_audit_proxy.cli.options import (
    ENV_PREFIX,
    ConfigError,
    added_header_name,
    address,
    at_least,
    at_most,
    env_name,
    flag,
    header_name,
    header_names,
    name_list,
    non_negative_float,
    option,
    percent,
    port,
    positive_float,
    positive_int,
    ratio,
    readable_file,
    service_link,
    settings,
    shown_url,
    size,
    upstream_url,
)
from sse_audit_proxy.core.audit import Thresholds
from sse_audit_proxy.core.guard import MAX_GUARD_WINDOW
from sse_audit_proxy.server import loop, workers
from sse_audit_proxy.server.access import key_problem, read_key_file
from sse_audit_proxy.server.canary import BASELINE, CANARY, CanaryConfig, label_name
from sse_audit_proxy.server.canary_control import read_percent_file
from sse_audit_proxy.server.inbound import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT,
)
from sse_audit_proxy.server.proxy import ProxyConfig, upstream_ssl
from sse_audit_proxy.server.run import listen_error, raise_open_files_limit, serve
from sse_audit_proxy.server.service import ServiceConfig
from sse_audit_proxy.sinks.line_writer import DEFAULT_LIMIT as DEFAULT_LOG_BUFFER
from sse_audit_proxy.sinks.logs import LOG_FORMATS, configure_logging, flush_logs
from sse_audit_proxy.sinks.recent import DEFAULT_CAPACITY, MAX_RECENT

_RULES = Thresholds()  # the documented defaults of the timing rules
# More processes than any machine has cores for (10,000 spawned until the kernel refused).
MAX_WORKERS = 256
MIN_LOG_BUFFER = 64 << 10


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the auditing reverse proxy",
        description="Forward every request to --upstream unchanged and audit each event stream on the side.",
    )
    option(
        p,
        "--upstream",
        type=upstream_url,
        required=True,
        help="base URL of the gateway to forward to, e.g. https://gateway.internal (no query, "
        "and no user:password@: the client's own credentials are forwarded)",
    )
    add_canary_options(p)
    option(
        p,
        "--host",
        type=address,
        default="127.0.0.1",
        help="address to listen on (0.0.0.0: every IPv4 address; :: every IPv6 address only, as "
        "nginx's [::])",
    )
    option(p, "--port", type=port, default=8080, help="port to listen on (0: any free port)")
    option(
        p,
        "--metrics-host",
        type=address,
        default="127.0.0.1",
        help="address of the admin port: /metrics, /healthz, /readyz, /streams lookups and the inspector",
    )
    option(
        p,
        "--metrics-port",
        type=port,
        default=9464,
        help="the admin port: /metrics, /healthz, /readyz, /streams lookups and the inspector",
    )
    option(
        p,
        "--admin-hosts",
        type=name_list,
        listed=True,
        help="comma-separated host names under which the metrics port also serves stream records, "
        "evidence and the inspector (an IP address and localhost always do; any other Host gets 421, "
        "against DNS rebinding); /metrics and the health checks answer any Host",
    )
    option(
        p,
        "--idle-timeout",
        type=positive_float,
        default=300.0,
        help="seconds without upstream progress (the response head, body bytes, keep-alives "
        "included) before a stream is aborted as `timeout`: above the longest silence of a "
        "model that thinks without keep-alives, and of your clients' read timeouts (the "
        "openai and anthropic SDKs wait 600 s)",
    )
    option(
        p,
        "--connect-timeout",
        type=positive_float,
        default=10.0,
        help="seconds to establish the upstream connection (then 504)",
    )
    option(
        p,
        "--total-timeout",
        type=positive_float,
        default=3600.0,
        help="seconds one request may take from start to the last byte, stream included",
    )
    option(
        p,
        "--header-timeout",
        type=positive_float,
        default=DEFAULT_HEADER_TIMEOUT,
        help="seconds a client has to send a whole request head (then the connection is "
        "closed; slow-headers attacks)",
    )
    option(
        p,
        "--body-timeout",
        type=positive_float,
        default=DEFAULT_BODY_TIMEOUT,
        help="seconds a client may send no request body bytes while its body is awaited (then "
        "408 and the connection is closed; slow-body attacks)",
    )
    option(
        p,
        "--keepalive-timeout",
        type=positive_float,
        default=DEFAULT_KEEPALIVE_TIMEOUT,
        help="seconds an idle kept-alive client connection stays open",
    )
    option(
        p,
        "--drain-timeout",
        type=positive_float,
        default=30.0,
        help="on SIGTERM, seconds in-flight requests get to finish before they are cut",
    )
    option(
        p,
        "--max-body-bytes",
        type=size,
        default=512 << 20,
        help="largest request body accepted (larger: 413); bodies stream to the upstream, never "
        "held; accepts k/m/g suffixes",
    )
    option(
        p,
        "--max-unsent-bytes",
        type=at_most(size, 1 << 30, "1g"),  # 2g and more started, then every answer was a 500
        default=1 << 20,
        help="bytes a client may leave unread before the upstream is read no further until it "
        "takes some (backpressure), at most 1g; accepts k/m/g suffixes",
    )
    option(
        p,
        "--send-timeout",
        type=positive_float,
        default=300.0,
        help="seconds an event stream's (or JSON-lines stream's) client may take nothing while more than "
        "--max-unsent-bytes waits for it, before the stream is aborted as `slow_client`; a "
        "client is seen to take some when its kernel opens its receive window, about every "
        "100 KiB it reads: keep this in tens of seconds",
    )
    option(
        p,
        "--upstream-ca-file",
        type=readable_file,
        help="PEM file of extra CA certificates trusted for the upstream's TLS (an https:// "
        "--upstream or --canary)",
    )
    flag(p, "--insecure-upstream", help="do not verify the upstream's TLS certificate (testing only)")
    option(
        p,
        "--require-key",
        type=name_list,
        listed=True,
        secret=True,
        empty_counts=True,
        help="comma-separated API keys a client must present (Authorization: Bearer, "
        "api-key or x-api-key) or get 401; prefer the env var or --require-key-file",
    )
    option(
        p,
        "--require-key-file",
        type=readable_file,
        empty_counts=True,  # set but empty (a templated path that came out empty) is no auth
        help="file of allowed API keys, one a line (# comments); adds to --require-key",
    )
    option(
        p,
        "--secret-headers",
        type=header_names,
        listed=True,
        help="comma-separated header names to redact from logs, on top of Authorization, "
        "Proxy-Authorization, api-key, x-api-key, Cookie, Set-Cookie",
    )
    option(
        p,
        "--instance-header",
        type=added_header_name,
        help="add this response header (e.g. X-Audit-Instance) naming the host (pod) that "
        "relayed the response, to find its logs and evidence; off by default",
    )
    option(
        p,
        "--max-frame-bytes",
        type=size,
        default=1 << 20,
        help="largest SSE frame the audit reads; larger ones are relayed unread (anomaly "
        "oversized_frame), known by their event name only. A generated image in a stream is "
        "several MiB: raise it to read their usage",
    )
    option(
        p,
        "--max-models",
        type=positive_int,
        default=100,
        help="distinct `model` label values before new ones are reported as `other` (each "
        "streamed route, model and side costs about 165 series: docs/operate/metrics.md)",
    )
    option(
        p,
        "--buffered-min-frames",
        type=positive_int,
        default=_RULES.buffered_min_frames,
        help="content frames a stream needs before it can be judged buffered",
    )
    option(
        p,
        "--buffered-wait-ratio",
        type=ratio,
        default=_RULES.buffered_wait_ratio,
        help="buffered when the first content came at least this share of the way to the last one",
    )
    option(
        p,
        "--buffered-max-spacing",
        type=positive_float,
        default=_RULES.buffered_max_spacing,
        help="buffered when content frames came on average closer than this (seconds)",
    )
    option(
        p,
        "--buffered-min-ttft",
        type=positive_float,
        default=_RULES.buffered_min_ttft,
        help="a burst after a shorter time to first token is a fast upstream, not buffering",
    )
    option(
        p,
        "--buffered-max-gap",
        type=positive_float,
        default=_RULES.buffered_max_gap,
        help="successive content frames closer than this (seconds) were read together, not paced",
    )
    option(
        p,
        "--buffered-gap-share",
        type=ratio,
        default=_RULES.buffered_gap_share,
        help="buffered only when at least this share of the gaps between content frames are "
        "under --buffered-max-gap",
    )
    option(
        p,
        "--bursty-min-bursts",
        type=positive_int,
        default=_RULES.bursty_min_bursts,
        help="bursty when at least this many clumps of content came after long silences",
    )
    option(
        p,
        "--bursty-min-clump",
        type=positive_int,
        default=_RULES.bursty_min_clump,
        help="content frames a clump needs to count as a burst",
    )
    option(
        p,
        "--bursty-min-silence",
        type=positive_float,
        default=_RULES.bursty_min_silence,
        help="seconds without content before a clump for it to count as a burst",
    )
    option(
        p,
        "--bursty-max-spacing",
        type=positive_float,
        default=_RULES.bursty_max_spacing,
        help="content frames read closer together than this (seconds) belong to one clump",
    )
    option(
        p,
        "--bursty-min-share",
        type=ratio,
        default=_RULES.bursty_min_share,
        help="bursty only when bursts hold at least this share of the content frames",
    )
    option(
        p,
        "--log-format",
        default="json",
        choices=LOG_FORMATS,
        help="json: one JSON object per line; console: for people",
    )
    option(
        p,
        "--log-buffer-bytes",
        # Below a few lines' worth, every line is dropped (a `stream_end` line is 1 to 4 KiB).
        type=at_least(size, MIN_LOG_BUFFER, "64k"),
        default=DEFAULT_LOG_BUFFER,
        help="log lines waiting for a slow stdout reader, at most; lines past it are dropped "
        "and counted (sse_audit_log_lines_dropped_total), never waited for; at least 64k; accepts "
        "k/m/g suffixes",
    )
    option(
        p,
        "--workers",
        type=positive_int,
        default=1,
        help=f"processes sharing the port (SO_REUSEPORT), at most {MAX_WORKERS}; the metrics "
        "port merges their metrics",
    )
    option(
        p,
        "--recent-streams",
        type=at_most(positive_int, MAX_RECENT, f"{MAX_RECENT:,}"),
        default=DEFAULT_CAPACITY,
        help="audit records each process keeps for GET /streams/recent and /streams/{trace_id}, "
        f"at most {MAX_RECENT:,}",
    )
    p.set_defaults(run=run, known_settings=settings(p))


# Settings that act only with --canary, and only with --canary-guard; the share and the guard
# themselves are refused without --canary (canary_from).
_CANARY_ONLY = (
    "canary_percent",
    "canary_percent_file",
    "canary_guard",
    "canary_sticky_header",
    "canary_side_header",
    "canary_name",
)
_GUARD_ONLY = (
    "canary_guard_window",
    "canary_guard_margin",
    "canary_guard_min_streams",
    "canary_guard_ttft_ratio",
    "canary_guard_ttft_floor",
)


def unused_canary_settings(args: argparse.Namespace) -> tuple[list[str], str]:
    """Canary settings given where they do nothing, and what they wait for: said at start, not
    refused (a ConfigMap that keeps them while its canary is taken out must still roll back)."""
    dests: tuple[str, ...]
    if args.canary is None:
        dests, missing = (*_CANARY_ONLY, *_GUARD_ONLY), "--canary"
    elif not args.canary_guard:
        dests, missing = _GUARD_ONLY, "--canary-guard"
    else:
        return [], ""
    builtin = args.builtin_defaults
    given = [f"--{dest.replace('_', '-')}" for dest in dests if getattr(args, dest) != builtin[dest]]
    return given, missing


def unknown_settings(known: frozenset[str]) -> list[str]:
    """SSE_AUDIT_ variables that name no flag of `serve`: a misspelt one (SSE_AUDIT_REQUIRE_KEYS)
    was ignored without a word, and the proxy ran without the auth it was meant to set. Not
    Kubernetes' variables for a Service (its own, `sse-audit-proxy`, made 13 of them)."""
    return sorted(
        name
        for name, value in os.environ.items()
        # (in any case: `sse_audit_require_key` set nothing either)
        if name.upper().startswith(ENV_PREFIX) and name not in known and not service_link(name, value)
    )


# Words of an unknown variable that reads as an attempt at inbound auth (SSE_AUDIT_API_KEY,
# SSE_AUDIT_AUTH_TOKEN): the proxy started open with a warning (an outside review).
_AUTH_WORDS = re.compile(r"KEY|AUTH|TOKEN|SECRET|PASSWORD|CREDENTIAL")


def auth_guesses(unknown: list[str], known: frozenset[str], every: frozenset[str]) -> list[str]:
    """Unknown variables whose names say keys or auth, not another command's (probe's
    SSE_AUDIT_API_KEY_ENV in the same shell, in any case)."""
    others = every - known
    return [name for name in unknown if name.upper() not in others and _AUTH_WORDS.search(name.upper())]


# The settings whose loss leaves the proxy open (no inbound auth, secrets in its records and
# logs, its lookups open to any host): a variable that reads as a misspelling of one is refused.
# Of any other, said (a ConfigMap that names a newer release's flag must not stop a rollback).
GUARDING = frozenset(
    env_name(flag) for flag in ("--require-key", "--require-key-file", "--secret-headers", "--admin-hosts")
)


def mistyped_settings(unknown: list[str], known: frozenset[str], every: frozenset[str]) -> dict[str, str]:
    """Unknown variables that read as a misspelling of one of serve's (SSE_AUDIT_REQUIRE_KEYS),
    with the one each reads as. Another command's variables (traffic's, probe's in the same
    shell) are not misspellings."""
    found = {}
    for name in unknown:
        if name in every:
            continue
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if near:
            found[name] = near[0]
    return found


def add_canary_options(p: argparse.ArgumentParser) -> None:
    option(
        p,
        "--canary",
        type=upstream_url,
        help="base URL of a second gateway that gets --canary-percent of the requests",
    )
    option(
        p,
        "--canary-percent",
        type=percent,
        default=0.0,
        help="share of requests sent to --canary, 0 to 100, decimals allowed",
    )
    option(
        p,
        "--canary-percent-file",
        type=readable_file,
        help="file holding the canary percent; re-read on SIGHUP and when it changes "
        "(a Kubernetes ConfigMap works); overrides --canary-percent",
    )
    option(
        p,
        "--canary-sticky-header",
        type=header_name,
        help="requests with the same value of this header always go to the same side "
        "(a stable hash: same answer in every worker and replica)",
    )
    option(
        p,
        "--canary-side-header",
        type=header_name,
        help="let a request pick its side by sending this header with a side's name "
        "(for probes; off unless set: otherwise no client can choose the canary)",
    )
    option(
        p,
        "--upstream-name",
        type=side_name,
        default=BASELINE,
        help="the `upstream` label value of --upstream",
    )
    option(p, "--canary-name", type=side_name, default=CANARY, help="the `upstream` label value of --canary")
    flag(
        p,
        "--canary-guard",
        help="compare canary and baseline streams and set the canary share to 0 when the "
        "canary is worse (bad-stream share or p95 TTFT)",
    )
    option(
        p,
        "--canary-guard-window",
        type=positive_int,
        default=200,
        help=(
            "the canary's recent streams the guard compares with the baseline's of the same "
            "time, and with its last as many (at most 5,000)"
        ),
    )
    option(
        p,
        "--canary-guard-margin",
        type=percent,
        default=5.0,
        help="percentage points the canary's bad-stream share may exceed the baseline's",
    )
    option(
        p,
        "--canary-guard-min-streams",
        type=positive_int,
        default=20,
        help="streams each side needs before the guard can compare them (at most --canary-guard-window)",
    )
    option(
        p,
        "--canary-guard-ttft-ratio",
        type=positive_float,
        default=2.0,
        help="trip when the canary's p95 TTFT exceeds the baseline's by this factor",
    )
    option(
        p,
        "--canary-guard-ttft-floor",
        type=non_negative_float,
        default=0.25,
        help="... and by at least this many seconds: a canary farther away adds its round trips "
        "to every first token, which doubles a fast gateway's p95 without a fault",
    )


def side_name(value: str) -> str:
    try:
        return label_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def canary_from(args: argparse.Namespace) -> CanaryConfig:
    if args.canary is not None and args.upstream_name == args.canary_name:  # without, no side is
        raise ConfigError(f"--upstream-name and --canary-name must differ (both {args.upstream_name!r})")
    if args.canary is None:
        # Its percent, file and guard do nothing without it: warned (unused_canary_settings),
        # not refused, so a configuration that took the canary out by its URL alone starts (it
        # crash-looped, and the rollback stalled: an outside review).
        return CanaryConfig(upstream_name=args.upstream_name, canary_name=args.canary_name)
    if args.canary_guard_window > MAX_GUARD_WINDOW:
        raise ConfigError(
            f"--canary-guard-window {args.canary_guard_window}: at most {MAX_GUARD_WINDOW:,} (the "
            "guard's p95 bounds are worked out once per window size, on the event loop)"
        )
    if args.canary_guard and args.canary_guard_min_streams > args.canary_guard_window:
        raise ConfigError(
            f"--canary-guard-min-streams {args.canary_guard_min_streams} is more than "
            f"--canary-guard-window {args.canary_guard_window}: the guard could never trip"
        )
    if args.canary_guard_ttft_ratio < 1.0:
        raise ConfigError(
            f"--canary-guard-ttft-ratio {args.canary_guard_ttft_ratio:g}: must be at least 1 "
            "(below, a canary as fast as the baseline trips)"
        )
    config = CanaryConfig(
        url=None if args.canary is None else str(args.canary),
        percent=args.canary_percent,
        upstream_name=args.upstream_name,
        canary_name=args.canary_name,
        sticky_header=args.canary_sticky_header,
        side_header=args.canary_side_header,
        percent_file=args.canary_percent_file,
        guard=args.canary_guard,
        guard_window=args.canary_guard_window,
        guard_margin=args.canary_guard_margin,
        guard_min_streams=args.canary_guard_min_streams,
        guard_ttft_ratio=args.canary_guard_ttft_ratio,
        guard_ttft_floor=args.canary_guard_ttft_floor,
    )
    if config.percent_file is not None:
        try:
            read_percent_file(config.percent_file)
        except OSError as exc:  # a wrong path: configuration. A bad value: the share is 0 until
            # a good one, as when the file goes bad at run time (a pod that starts while the
            # ConfigMap holds a typo must not crash-loop while the running ones go on).
            raise ConfigError(f"--canary-percent-file {config.percent_file!r}: {exc}") from exc
        except (ValueError, UnicodeDecodeError):
            pass
    return config


def _overlap(host: str, other: str) -> bool:
    """Whether listening on both addresses at one port would take the same socket address:
    the same address, or the wildcard of its family (`::` is IPv6 only, as asyncio binds it)."""
    if host == other or "" in (host, other):
        return True
    return any(
        wildcard in ("0.0.0.0", "::") and (":" in wildcard) == (":" in name)
        for wildcard, name in ((host, other), (other, host))
    )


def _is_this_proxy(url: URL, host: str, port: int) -> bool:
    """Whether `url` names the proxy's own listening socket: every request it forwards would
    come back to it, each a new request (one curl made about 9,800 in 5 s, an outside review).
    Addresses in any spelling (`127.1`, `0`, `::ffff:127.0.0.1`) and `localhost`; other names
    are not resolved at start."""
    if not port or (url.port or 0) != port:
        return False
    listening = _addresses(host)
    for target in _addresses((url.host or "").strip("[]")):
        if target.is_unspecified:  # a connect to 0.0.0.0 (::) reaches the host's loopback
            target = ipaddress.ip_address("127.0.0.1" if target.version == 4 else "::1")
        for bound in listening:
            if bound == target or (
                bound.is_unspecified and bound.version == target.version and target.is_loopback
            ):
                return True
    return False


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """What a host names, without resolving: `localhost`, or an address as a socket reads it."""
    host = host.lower()
    if host == "localhost":
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    if host == "":
        return [ipaddress.ip_address("0.0.0.0")]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            return [ipaddress.ip_address(socket.inet_aton(host))]  # `127.1`, `0`, `0x7f.1`
        except OSError:
            return []
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    return [ip]


def config_from(args: argparse.Namespace) -> ServiceConfig:
    thresholds = Thresholds(
        buffered_min_frames=args.buffered_min_frames,
        buffered_wait_ratio=args.buffered_wait_ratio,
        buffered_max_spacing=args.buffered_max_spacing,
        buffered_min_ttft=args.buffered_min_ttft,
        buffered_max_gap=args.buffered_max_gap,
        buffered_gap_share=args.buffered_gap_share,
        bursty_min_bursts=args.bursty_min_bursts,
        bursty_min_clump=args.bursty_min_clump,
        bursty_min_silence=args.bursty_min_silence,
        bursty_max_spacing=args.bursty_max_spacing,
        bursty_min_share=args.bursty_min_share,
        max_frame_bytes=args.max_frame_bytes,
    )
    if args.workers > MAX_WORKERS:
        raise ConfigError(f"--workers {args.workers}: at most {MAX_WORKERS}")
    for url, name in ((args.upstream, "--upstream"), (args.canary, "--canary")):
        if url is not None and _is_this_proxy(url, args.host, args.port):
            raise ConfigError(
                f"{name} {shown_url(str(url))} is this proxy's own --port {args.port}: it would "
                "forward each request to itself; give the gateway's address"
            )
        if url is not None and _is_this_proxy(url, args.metrics_host, args.metrics_port):
            # Its clients would be served the records and pages of the metrics port, whose
            # Host check the upstream's own Host passes (an outside review).
            raise ConfigError(
                f"{name} {shown_url(str(url))} is this proxy's own --metrics-port "
                f"{args.metrics_port}; give the gateway's address"
            )
    if args.port and args.port == args.metrics_port and _overlap(args.host, args.metrics_host):
        raise ConfigError(f"--port and --metrics-port are both {args.port}: give each its own port")
    if args.require_key is not None and not args.require_key:
        # Given, yet no key in it (`' , '`, or the env var set empty): running without
        # auth is not what was asked for.
        raise ConfigError(
            "--require-key: no API keys given (an empty list); set keys, or "
            "unset it and SSE_AUDIT_REQUIRE_KEY to run without inbound auth"
        )
    tls = any(u is not None and u.scheme == "https" for u in (args.upstream, args.canary))
    for given, name in (
        (args.upstream_ca_file, "--upstream-ca-file"),
        (args.insecure_upstream, "--insecure-upstream"),
    ):
        if given and not tls:
            # TLS settings for a plain-text upstream: what was meant to be verified (or
            # knowingly not) would go out unencrypted.
            raise ConfigError(f"{name} is for an https:// upstream, and --upstream and --canary are http://")
    keys = tuple(args.require_key or ())
    for i, key in enumerate(keys, 1):
        if (problem := key_problem(key)) is not None:
            raise ConfigError(f"--require-key (or SSE_AUDIT_REQUIRE_KEY): key {i} (not shown) {problem}")
    if args.require_key_file:
        try:
            from_file = tuple(read_key_file(args.require_key_file))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--require-key-file: cannot read {args.require_key_file!r}: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"--require-key-file: {args.require_key_file!r}: {exc}") from exc
        if not from_file:  # (with --require-key too: a key file mounted empty is not what was meant)
            raise ConfigError(f"--require-key-file: no keys in {args.require_key_file!r}")
        keys += from_file
    proxy = ProxyConfig(
        upstream=args.upstream,
        host=args.host,
        port=args.port,
        connect_timeout=args.connect_timeout,
        idle_timeout=args.idle_timeout,
        total_timeout=args.total_timeout,
        max_body_bytes=args.max_body_bytes,
        max_unsent_bytes=args.max_unsent_bytes,
        send_timeout=args.send_timeout,
        drain_timeout=args.drain_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keepalive_timeout=args.keepalive_timeout,
        upstream_ca_file=args.upstream_ca_file,
        insecure_upstream=args.insecure_upstream,
        require_keys=keys,
        thresholds=thresholds,
        instance_header=args.instance_header or None,
        secret_headers=tuple(args.secret_headers or ()),
    )
    try:
        upstream_ssl(proxy)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"--upstream-ca-file: not a PEM CA file: {args.upstream_ca_file!r}") from exc
    return ServiceConfig(
        proxy=proxy,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        max_models=args.max_models,
        recent_streams=args.recent_streams,
        canary=canary_from(args),
        secret_headers=tuple(args.secret_headers or ()),
        admin_hosts=tuple(args.admin_hosts or ()),
    )


def run(args: argparse.Namespace) -> int:
    if sys.stdout is None:  # started with `>&-`: an AttributeError's traceback (an outside review)
        if sys.stderr is not None:
            print(
                "sse-audit-proxy: error: stdout is closed: the log lines go there (send it to a file "
                "or /dev/null)",
                file=sys.stderr,
            )
        return 2
    unknown = unknown_settings(args.known_settings)
    try:
        mistyped = mistyped_settings(unknown, args.known_settings, args.every_setting)
        refused = [f"{name} (did you mean {meant}?)" for name, meant in mistyped.items() if meant in GUARDING]
        refused += [
            f"{name} (inbound keys are SSE_AUDIT_REQUIRE_KEY or SSE_AUDIT_REQUIRE_KEY_FILE)"
            for name in auth_guesses(unknown, args.known_settings, args.every_setting)
            if mistyped.get(name) not in GUARDING
        ]
        if refused:  # names only: a value could be a key
            raise ConfigError(f"no such setting: {', '.join(refused)}")
        config = config_from(args)
    except ConfigError as exc:
        print(f"sse-audit-proxy: error: {exc}", file=sys.stderr)
        return 2
    # A picklable recipe, so spawned workers log exactly as the parent does.
    setup_logging = functools.partial(
        configure_logging,
        args.log_format,
        secret_headers=tuple(args.secret_headers or ()),
        buffer_bytes=args.log_buffer_bytes,
    )
    setup_logging()
    if unknown:  # names only: a value could be a key
        meant = {name: mistyped[name] for name in unknown if name in mistyped}
        structlog.get_logger("sse_audit_proxy").warning("unknown_settings", names=unknown, did_you_mean=meant)
    if args.upstream_ca_file and args.insecure_upstream:
        # Said, not refused: a debugging switch left beside a mounted CA file must not stop a
        # rollout (a second review).
        structlog.get_logger("sse_audit_proxy").warning(
            "upstream_ca_file_unused", reason="--insecure-upstream: nothing is verified"
        )
    unused, missing = unused_canary_settings(args)
    if unused:
        structlog.get_logger("sse_audit_proxy").warning("canary_settings_unused", names=unused, needs=missing)
    if args.canary is not None and str(args.canary).rstrip("/") == str(args.upstream).rstrip("/"):
        # An A/A run (to see the sides agree before a real canary) does this on purpose; a
        # mistyped setting does not: said, not refused.
        structlog.get_logger("sse_audit_proxy").warning("canary_is_upstream", url=shown_url(str(args.canary)))
    try:
        if args.workers > 1:
            raise_open_files_limit()  # before the workers start: they inherit it
            # Workers drain on their own; the supervisor waits that long and a little more.
            return loop.run(
                workers.supervise(config, args.workers, setup_logging, args.drain_timeout + 5.0, listen_error)
            )
        return loop.run(serve(config))
    except OSError as exc:
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        print(f"sse-audit-proxy: error: out of file descriptors (limit {limit}): {exc}", file=sys.stderr)
        return 1
    finally:
        flush_logs()
