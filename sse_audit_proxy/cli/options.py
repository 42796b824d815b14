"""Command-line options that can also come from `SSE_AUDIT_<FLAG>` environment variables."""

from __future__ import annotations

import argparse
import os
import re
import stat
from collections.abc import Callable
from typing import Any

from yarl import URL

from sse_audit_proxy.core.request_info import TRACE_HEADERS
from sse_audit_proxy.server.canary import parse_percent

ENV_PREFIX = "SSE_AUDIT_"


class ConfigError(Exception):
    """Bad configuration: reported as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage block) and exit non-zero, and a variable's
    bad value is an error only when no flag on the command line overrides it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"sse-audit-proxy: error: {message}\n")

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed = super().parse_args(args, namespace)
        for value in vars(parsed).values():
            if isinstance(value, BadVariable):
                self.error(value.message)
        return parsed


class BadVariable:
    """The default of a flag whose variable holds a value it cannot take: an error when the
    flag is not given (the docs' "a flag on the command line wins": `SSE_AUDIT_PORT=abc` with
    `--port 0` was refused, an outside review)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def settings(parser: argparse.ArgumentParser) -> frozenset[str]:
    """The variables of a command's flags. A flag's variable is named for its first long form
    (`--canary-guard`, not its `--no-`)."""
    return frozenset(
        env_name(next(o for o in a.option_strings if o.startswith("--")))
        for a in parser._actions
        if a.dest != "help" and any(o.startswith("--") for o in a.option_strings)
    )


# Kubernetes gives each container variables for every Service of its namespace (unless the pod
# sets `enableServiceLinks: false`), named for the Service: `sse-audit-proxy` makes
# SSE_AUDIT_PROXY_SERVICE_HOST, SSE_AUDIT_PROXY_PORT=tcp://10.0.0.1:8080 and more, and a Service
# named `sse-audit` makes SSE_AUDIT_PORT=tcp://..., the proxy port's own variable (every pod
# then exited 2). Each shape: the end of its name, and its value.
_IP = r"[0-9A-Fa-f.:]+"
_LINK = r"_PORT_\d+_(?:TCP|UDP|SCTP)"
_SERVICE_LINKS = tuple(
    (re.compile(f"(?:{name})$"), re.compile(value))
    for name, value in (
        ("_SERVICE_HOST", _IP),
        ("_SERVICE_PORT(?:_[A-Z0-9_]+)?", r"\d+"),
        (f"_PORT|{_LINK}", rf"(?:tcp|udp|sctp)://(?:{_IP}|\[{_IP}\]):\d+"),
        (f"{_LINK}_PROTO", r"tcp|udp|sctp"),
        (f"{_LINK}_PORT", r"\d+"),
        (f"{_LINK}_ADDR", _IP),
    )
)


def service_link(name: str, value: str) -> bool:
    """Whether an environment variable is one that Kubernetes made for a Service."""
    return any(n.search(name) and v.fullmatch(value) for n, v in _SERVICE_LINKS)


class _Once(argparse.Action):
    """A list given twice is an error: the first list was dropped without a word (the keys of
    `--require-key ka --require-key kb` were kb alone, and ka got 401)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        given = f"_{self.dest}_given"
        if getattr(namespace, given, False):
            parser.error(f"argument {option}: given twice: put all the values in one comma-separated list")
        setattr(namespace, given, True)
        setattr(namespace, self.dest, values)


def option(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    type: Callable[[str], Any] = str,
    default: Any = None,
    help: str,
    required: bool = False,
    choices: tuple[str, ...] | None = None,
    secret: bool = False,
    empty_counts: bool = False,
    listed: bool = False,
) -> None:
    """Add `--flag` whose default comes from SSE_AUDIT_FLAG when that is set.

    `secret`: the value (say, an API key from the environment) never appears in --help.
    `empty_counts`: SSE_AUDIT_FLAG set but empty is a value (parsed as ""), not "unset";
    for settings where an empty value must be refused rather than quietly ignored.
    `listed`: a comma-separated list, which may be given once.
    """
    env = env_name(flag)
    _builtin_default(parser, flag, default)
    raw = os.environ.get(env)
    if raw is not None and service_link(env, raw):
        raw = None  # Kubernetes' for a Service named like the setting, not a setting
    if raw is not None and (raw != "" or empty_counts):
        # The value as an error shows it: never a secret's, never a URL's credentials or query.
        shown = "(hidden)" if secret else repr(shown_url(raw))
        try:
            default = type(raw)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            default = BadVariable(f"{env}={shown}: {exc}")
        else:
            if choices and default not in choices:
                default = BadVariable(f"{env}={shown}: choose from {', '.join(choices)}")
        required = False
    shown = "" if default is None or secret or isinstance(default, BadVariable) else f" (default: {default})"
    parser.add_argument(
        flag,
        type=type,
        default=default,
        required=required,
        choices=choices,
        help=f"{help}{shown} [env: {env}]",
        action=_Once if listed else "store",
    )


_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")


def _builtin_default(parser: argparse.ArgumentParser, flag: str, default: object) -> None:
    builtin = parser.get_default("builtin_defaults")
    if builtin is None:  # one mapping per command: its flags' defaults before the environment's
        builtin = {}
        parser.set_defaults(builtin_defaults=builtin)
    builtin[flag[2:].replace("-", "_")] = default


def flag(parser: argparse.ArgumentParser, name: str, *, help: str) -> None:
    """A boolean switch, also on when SSE_AUDIT_NAME is 1/true/yes/on; `--no-NAME` turns it off
    on the command line. Any other value of the variable is an error: `enabled` or `y` left the
    switch off without a word (a canary guard that never tripped)."""
    env = env_name(name)
    _builtin_default(parser, name, False)
    raw = os.environ.get(env)
    value = "" if raw is None else raw.strip().lower()
    default: bool | BadVariable = value in _ON
    if value not in _ON + _OFF:
        default = BadVariable(
            f"{env}={raw!r}: choose from {', '.join(_ON)} (on) or {', '.join(_OFF[1:])} (off)"
        )
    parser.add_argument(
        name, action=argparse.BooleanOptionalAction, default=default, help=f"{help} [env: {env}]"
    )


# A URL's scheme and slashes, however many (`http:/user:pw@host` too).
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/*")


def shown_url(value: str) -> str:
    """A URL as an error message shows it: everything before its last `@` (where a URL parser
    ends the user part: a password can hold `@`, `/` or `?`) is `[redacted]`, and so is a
    query or fragment after it (`?key=...`)."""
    if "@" in value:
        scheme = _SCHEME.match(value)
        value = (scheme.group(0) if scheme else "") + "[redacted]@" + value.rpartition("@")[2]
    cut = min((i for i in (value.find("?"), value.find("#")) if i >= 0), default=-1)
    return value if cut < 0 else value[:cut] + value[cut] + "[redacted]"


# A DNS name (international ones reach here in their xn-- form) or an IPv4 address; `_` as
# Docker Compose and Kubernetes names allow it. `a b` started and answered every request 502.
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")


def is_host_name(host: str) -> bool:
    """A DNS name or IPv4 address whose labels DNS can carry (63 characters each, 253 in all):
    a longer one started, then every request failed (IDNA's `label too long`)."""
    return (
        _HOST.fullmatch(host) is not None
        and len(host.rstrip(".")) <= 253
        and all(0 < len(label) <= 63 for label in host.rstrip(".").split("."))
    )


def upstream_url(value: str) -> URL:
    shown = shown_url(value)
    try:
        url = URL(value)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"not a URL: {shown!r}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// URL, got {shown!r}")
    if url.user is not None or url.password is not None:
        # Never sent (the client's own credentials are forwarded), so they were dropped, and
        # the start-up line wrote them out.
        raise argparse.ArgumentTypeError(
            f"the upstream URL takes no user or password (the client's credentials are forwarded): {shown!r}"
        )
    try:
        given = url.explicit_port  # raises on an out-of-range port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad port in {shown!r}") from exc
    if given == 0:  # no server listens there (the readiness check asked port 80 instead)
        raise argparse.ArgumentTypeError(f"bad port in {shown!r}")
    host = url.raw_host or ""
    if ":" not in host and not is_host_name(host):  # an IPv6 literal has its colons
        raise argparse.ArgumentTypeError(f"not a host name in {shown!r}")
    if url.query_string or url.fragment:
        raise argparse.ArgumentTypeError(f"the upstream URL takes no query or fragment: {shown!r}")
    return url


def _ascii(value: str, what: str) -> str:
    """`value` if it is ASCII: int() and float() read other scripts' digits (a port given in
    full-width digits bound port 80, an outside review), which no operator meant as a number."""
    if not value.isascii():
        raise argparse.ArgumentTypeError(f"{what}: {value!r}")
    return value


def port(value: str) -> int:
    try:
        n = int(_ascii(value, "not a port number"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from exc
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {n}")
    return n


def positive_float(value: str) -> float:
    try:
        n = float(_ascii(value, "not a number"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from exc
    if not n > 0 or n != n or n == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {value!r}")
    return n


def non_negative_float(value: str) -> float:
    try:
        n = float(_ascii(value, "not a number"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from exc
    if not n >= 0 or n == float("inf"):
        raise argparse.ArgumentTypeError(f"must be zero or a positive number: {value!r}")
    return n


def ratio(value: str) -> float:
    n = positive_float(value)
    if n > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {value!r}")
    return n


def share(value: str) -> float:
    """A share from 0 to 1, both included."""
    n = non_negative_float(value)
    if n > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {value!r}")
    return n


def _bounded(parse: Callable[[str], int], holds: Callable[[int], bool], says: str) -> Callable[[str], int]:
    def bounded(value: str) -> int:
        n = parse(value)
        if not holds(n):
            raise argparse.ArgumentTypeError(f"must be {says}: {value!r}")
        return n

    return bounded


def at_most(parse: Callable[[str], int], limit: int, shown: str) -> Callable[[str], int]:
    """`parse`'s number, at most `limit` (written `shown` in the error)."""
    return _bounded(parse, lambda n: n <= limit, f"at most {shown}")


def at_least(parse: Callable[[str], int], limit: int, shown: str) -> Callable[[str], int]:
    """`parse`'s number, at least `limit` (written `shown` in the error)."""
    return _bounded(parse, lambda n: n >= limit, f"at least {shown}")


def positive_int(value: str) -> int:
    try:
        n = int(_ascii(value, "not a whole number"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from exc
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value!r}")
    return n


MAX_SIZE = 1 << 40


def size(value: str) -> int:
    """A byte size: 1048576, 1024k, 1m."""
    text = _ascii(value, "not a size").strip().lower().removesuffix("b").removesuffix("i")
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:], 1)
    if scale != 1:
        text = text[:-1]
    try:
        n = int(float(text) * scale)
    except (ValueError, OverflowError) as exc:  # `inf`, `1e400`: a traceback, not an error line
        raise argparse.ArgumentTypeError(f"not a size: {value!r}") from exc
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte: {value!r}")
    if n > MAX_SIZE:  # 1e20 started, then every answer failed (uvloop's buffer limits overflow)
        raise argparse.ArgumentTypeError(f"must be at most 1024g: {value!r}")
    return n


def readable_file(value: str) -> str:
    """A regular file that can be opened for reading. Opened without blocking: a FIFO at the
    path held the start for as long as no writer came, with nothing said."""
    try:
        fd = os.open(value, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {value!r}: {exc.strerror}") from exc
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    if not regular:
        raise argparse.ArgumentTypeError(f"cannot read {value!r}: not a regular file")
    return value


def name_list(value: str) -> tuple[str, ...]:
    """A comma-separated list: `a, b,c`."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_var_name(value: str) -> str:
    """An environment variable's name (an empty one ran a probe without its key, exit 0)."""
    if not _ENV_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(f"not an environment variable's name: {value!r}")
    return value


def header_name(value: str) -> str:
    """An HTTP field name (RFC 9110 token): `X-Audit-Instance` (spaces around it dropped, as a
    templated environment value can carry them)."""
    value = value.strip()
    if not _TOKEN.fullmatch(value):
        # Only what comes before a colon is shown: a pasted header line carries its value (a key).
        name, colon, _ = value.partition(":")
        shown = f"{name.strip()!r} followed by a colon and a value (not shown)" if colon else repr(value)
        raise argparse.ArgumentTypeError(f"not an HTTP header name: {shown}")
    return value


def header_names(value: str) -> tuple[str, ...]:
    """A comma-separated list of HTTP field names (a name with a space matches no field)."""
    return tuple(header_name(name) for name in name_list(value))


def address(value: str) -> str:
    """An address to listen on: not empty, which would listen on every interface unasked."""
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]  # `[::1]`, as a URL writes an IPv6 address
    if not value:
        raise argparse.ArgumentTypeError(
            "empty: it would listen on every interface (say 0.0.0.0 if that is meant)"
        )
    if ":" not in value and not is_host_name(value):  # `..`, a 64-letter label: a traceback
        raise argparse.ArgumentTypeError(f"not a host name or address: {value!r}")
    return value


# What an answer's framing, its connection or its trace ID depend on: naming the instance with
# one broke every answer (`Content-Length: pod-7`) or the client's correlation. Nor a field a
# client acts on (`Set-Cookie: pod-7` set a cookie, `Retry-After: pod-7` is no delay).
_FIELDS_NOT_ADDED = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host", "date"}
    | {"set-cookie", "location", "www-authenticate", "retry-after", "cache-control", "vary"}
    | {"age", "expires", "etag", "last-modified", "authorization", "cookie"}
    | {name.lower() for name in TRACE_HEADERS}
)


def added_header_name(value: str) -> str:
    """The name of a header the proxy adds to its answers: not one they depend on."""
    name = header_name(value)
    lower = name.lower()
    if lower in _FIELDS_NOT_ADDED or lower.startswith(("content-", "proxy-")):
        raise argparse.ArgumentTypeError(
            f"{value!r} is a header answers depend on: use a name of its own, e.g. X-Audit-Instance"
        )
    return name


def percent(value: str) -> float:
    try:
        return parse_percent(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a percent from 0 to 100: {value!r}") from exc


def breaks_a_header(text: str) -> bool:
    """`text` holds a line break or NUL, which no header value can: the probe failed with a
    traceback on one mid-run, and traffic sent nothing and exited 0."""
    return "\r" in text or "\n" in text or "\0" in text


def request_header(value: str) -> tuple[str, str]:
    """`Name: value`, for a request a tool sends."""
    if breaks_a_header(value):
        raise argparse.ArgumentTypeError("a header cannot hold a line break or NUL")
    name, sep, val = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {value!r}")
    return name.strip(), val.strip()


# Headers that carry a key: the tools take none of them with -H, where a key would sit in the
# shell's history and the process list; the key comes from --api-key-env, in --api-key-header.
KEY_HEADERS = frozenset(
    {"authorization", "api-key", "x-api-key", "proxy-authorization", "x-litellm-api-key"}
    | {"x-goog-api-key", "ocp-apim-subscription-key"}
)
KEY_HEADER_DEFAULT = "Authorization"


def request_header_no_key(value: str) -> tuple[str, str]:
    """`Name: value`, not one of KEY_HEADERS."""
    name, val = request_header(value)
    if name.lower() in KEY_HEADERS:
        raise argparse.ArgumentTypeError(
            f"{name} is not taken on the command line: put the key in an environment variable "
            "and name it with --api-key-env (and the header with --api-key-header when it is "
            "not Authorization)"
        )
    return name, val


def key_header_value(header: str, key: str) -> str:
    """What `header` carries for `key`: a Bearer token in Authorization, the key itself in any
    other (Azure OpenAI's `api-key`, Anthropic's `x-api-key`, LiteLLM's `x-litellm-api-key`)."""
    return f"Bearer {key}" if header.lower() == "authorization" else key


# What a request's framing, its routing or the tools' own reading depend on: a key sent in
# `Content-Length` ended in a traceback that printed it, in `Host` it went to every access log.
_NOT_A_KEY_HEADER = _FIELDS_NOT_ADDED - {"authorization"} | {
    "accept",
    "accept-encoding",
    "expect",
    "user-agent",
    "range",
    "origin",
    "forwarded",
    "max-forwards",
    "priority",
    "http2-settings",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
}
# ... and these families: the body's description, a proxy's own fields (hop by hop), a
# request's conditions, a browser's, a hop's record of the client, the tools' own (the demo
# gateway's scenario, the probe's side).
_NOT_A_KEY_PREFIXES = ("content-", "proxy-", "if-", "sec-", "x-forwarded-", "x-demo-", "x-sse-audit-")


def key_header_name(value: str) -> str:
    name = header_name(value)
    lower = name.lower()
    if lower in _NOT_A_KEY_HEADER or lower.startswith(_NOT_A_KEY_PREFIXES):
        raise argparse.ArgumentTypeError(
            f"{name} cannot carry a key: the request's framing or routing needs it"
        )
    return name


def add_key_header_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--api-key-header",
        type=key_header_name,
        metavar="NAME",
        default=KEY_HEADER_DEFAULT,
        help="the header the key of --api-key-env is sent in: Authorization as a Bearer token, "
        "any other (api-key for Azure OpenAI, x-api-key) as it is (default: Authorization)",
    )


def base_url(value: str) -> URL:
    """An OpenAI base URL: `http://host:port` gets `/v1`, anything with a path is kept."""
    url = upstream_url(value)
    return url / "v1" if url.path in ("", "/") else url
