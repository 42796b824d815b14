"""The real command line: one-line errors for bad configuration, env vars, `python -m`."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import trustme
from yarl import URL

import sse_audit_proxy

EXE = [sys.executable, "-m", "sse_audit_proxy"]
# A proxy that would listen on free ports, for the checks before it does.
SERVE = ["serve", "--upstream", "http://127.0.0.1:1", "--port", "0", "--metrics-port", "0"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_AUDIT_")}
    full_env.update(env or {})
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, timeout=timeout, env=full_env, check=False
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sse-audit-proxy: error:")
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    "url", ["not a url", "ftp://host", "http://", "http://host:99999", "http://a b", "http://127.0.0.1:0"]
)
def test_unparseable_upstream_is_a_one_line_error(url: str) -> None:
    assert_one_line_error(run("serve", "--upstream", url), "--upstream")


@pytest.mark.parametrize("flag", ["--upstream", "--canary"])
@pytest.mark.parametrize(
    "url",
    [
        "http://svc:PASSWORD-in-url@127.0.0.1:1",
        "https://PASSWORD-in-url@gw.internal/v1",
        "http://svc:PASSWORD-in-url@127.0.0.1:99999",  # and another error: still not shown
        # a parser ends the user part at the last `@`; a password may hold `@`, `/` or `?`
        "http://svc:PASSWORD-in-url@tail@127.0.0.1:1",
        "http://svc:PASSWORD-in-url/x@127.0.0.1:1",
        "http://svc:PASSWORD-in-url?x@127.0.0.1:1",
        "http:/svc:PASSWORD-in-url@127.0.0.1:1",
    ],
)
def test_credentials_in_an_upstream_url_are_refused_and_never_shown(flag: str, url: str) -> None:
    """The proxy sends no URL credentials (the client's are forwarded): they were dropped, and
    the start-up line wrote the password out (outside review)."""
    args = ["--upstream", url] if flag == "--upstream" else ["--upstream", "http://127.0.0.1:1", flag, url]
    proc = run("serve", *args)
    assert_one_line_error(proc, flag, "[redacted]@")
    assert "PASSWORD-in-url" not in proc.stderr + proc.stdout and "tail" not in proc.stderr


@pytest.mark.parametrize("value", ["enabled", "y", "2", "maybe"])
def test_a_switch_variable_that_is_neither_on_nor_off_is_a_one_line_error(value: str) -> None:
    """`SSE_AUDIT_CANARY_GUARD=enabled` started the proxy with its guard off, without a word."""
    proc = run("serve", "--upstream", "http://127.0.0.1:1", env={"SSE_AUDIT_CANARY_GUARD": value})
    assert_one_line_error(proc, "SSE_AUDIT_CANARY_GUARD", repr(value))


def test_a_switch_on_in_the_environment_is_turned_off_on_the_command_line() -> None:
    from sse_audit_proxy.cli.main import build_parser

    saved = os.environ.get("SSE_AUDIT_INSECURE_UPSTREAM")
    os.environ["SSE_AUDIT_INSECURE_UPSTREAM"] = "yes"
    try:
        base = ["serve", "--upstream", "http://127.0.0.1:1"]
        assert build_parser().parse_args(base).insecure_upstream is True
        assert build_parser().parse_args([*base, "--no-insecure-upstream"]).insecure_upstream is False
    finally:
        if saved is None:
            del os.environ["SSE_AUDIT_INSECURE_UPSTREAM"]
        else:
            os.environ["SSE_AUDIT_INSECURE_UPSTREAM"] = saved


@pytest.mark.parametrize("variable", ["SSE_AUDIT_UPSTREAM", "SSE_AUDIT_CANARY"])
@pytest.mark.parametrize(
    "url", ["http://svc:PASSWORD-in-url@127.0.0.1:1", "https://gw.example/v1beta?key=PASSWORD-in-url"]
)
def test_an_upstream_url_from_the_environment_shows_no_credentials_in_its_error(
    variable: str, url: str
) -> None:
    """The error of a variable began with its raw value: the redacted URL after it hid nothing."""
    env = {"SSE_AUDIT_UPSTREAM": "http://127.0.0.1:1", variable: url}
    proc = run("serve", env=env)
    assert_one_line_error(proc, variable, "[redacted]")
    assert "PASSWORD-in-url" not in proc.stderr + proc.stdout


def _lines_to_start(args: list[str], env: dict[str, str]) -> tuple[list[dict[str, object]], tuple[str, str]]:
    """A serve's log lines up to `proxy_started`, then what it wrote until it stopped."""
    with subprocess.Popen(
        [*EXE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("SSE_AUDIT_")}, **env},
    ) as proc:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(json.loads(line))
            if lines[-1]["event"] == "proxy_started":
                break
        proc.terminate()
        rest = proc.communicate(timeout=20)
    return lines, rest


@pytest.mark.parametrize(
    ("args", "env", "names", "needs"),
    [
        (
            ["--canary-sticky-header", "x-user", "--canary-guard-margin", "0.2"],
            {},
            ["--canary-sticky-header", "--canary-guard-margin"],
            "--canary",
        ),
        ([], {"SSE_AUDIT_CANARY_NAME": "new-gateway"}, ["--canary-name"], "--canary"),
        # The canary taken out by its URL alone: its share, file and guard stay in the
        # ConfigMap (these three stopped the proxy, and the rollout stalled: an outside review).
        (
            ["--canary-percent", "5"],
            {"SSE_AUDIT_CANARY_PERCENT_FILE": str(Path(__file__)), "SSE_AUDIT_CANARY_GUARD": "1"},
            ["--canary-percent", "--canary-percent-file", "--canary-guard"],
            "--canary",
        ),
        (
            ["--canary", "http://127.0.0.1:2", "--canary-guard-window", "50"],
            {},
            ["--canary-guard-window"],
            "--canary-guard",
        ),
        (["--canary", "http://127.0.0.1:2", "--canary-guard", "--canary-guard-window", "50"], {}, None, None),
        (["--canary-name", "canary"], {}, None, None),  # the default, said again
        # Without a canary its name clashes with nothing (refused, the only way out warned)
        (["--upstream-name", "canary"], {}, None, None),
    ],
)
def test_canary_settings_that_do_nothing_are_said_at_start_not_refused(
    args: list[str], env: dict[str, str], names: list[str] | None, needs: str | None
) -> None:
    """A guard window or sticky header given without --canary (or --canary-guard) did nothing,
    without a word. Not an error: a configuration that keeps them while its canary is taken
    out must still start (a rollback)."""
    lines, _ = _lines_to_start([*SERVE, *args], env)
    assert lines[-1]["event"] == "proxy_started", lines
    warned = [line for line in lines if line["event"] == "canary_settings_unused"]
    if names is None:
        assert not warned, warned
    else:
        assert [(w["names"], w["needs"], w["level"]) for w in warned] == [(names, needs, "warning")]


def test_an_unknown_setting_is_named_in_a_warning_and_its_value_never_shown() -> None:
    """A variable that names no setting of serve and reads as no misspelling of one: said, with
    its name only; another command's variable (traffic's, set in the same shell) is not an
    error either."""
    env = {
        "SSE_AUDIT_AUDIT_LEVEL": "s3cret-VALUE",
        "SSE_AUDIT_CONCURRENCY": "8",
        # misspellings of settings that open nothing when lost: said, with what they read as
        # (a ConfigMap naming a newer release's flag must not stop a rollback); a switch's
        # variable has no `NO_` form
        "SSE_AUDIT_NO_CANARY_GUARD": "1",
        "SSE_AUDIT_IDLE_TIMOUT": "5",
        "SSE_AUDIT_UPSTREAM": "http://127.0.0.1:1",
        # What the kubelet sets for Services named `sse-audit-proxy` and `sse-audit` (outside
        # review: a false warning on every pod, and every pod exiting 2 on SSE_AUDIT_PORT).
        "SSE_AUDIT_PROXY_SERVICE_HOST": "10.96.0.10",
        "SSE_AUDIT_PROXY_SERVICE_PORT": "8080",
        "SSE_AUDIT_PROXY_SERVICE_PORT_METRICS": "9090",
        "SSE_AUDIT_PROXY_PORT": "tcp://10.96.0.10:8080",
        "SSE_AUDIT_PROXY_PORT_8080_TCP": "tcp://10.96.0.10:8080",
        "SSE_AUDIT_PROXY_PORT_8080_TCP_PROTO": "tcp",
        "SSE_AUDIT_PROXY_PORT_8080_TCP_PORT": "8080",
        "SSE_AUDIT_PROXY_PORT_8080_TCP_ADDR": "10.96.0.10",
        "SSE_AUDIT_SERVICE_HOST": "10.96.0.11",
        "SSE_AUDIT_PORT": "tcp://10.96.0.11:8080",
    }
    lines, rest = _lines_to_start(["serve", "--port", "0", "--metrics-port", "0"], env)
    (warning,) = [line for line in lines if line["event"] == "unknown_settings"]
    assert warning["names"] == [  # no Service's
        "SSE_AUDIT_AUDIT_LEVEL",
        "SSE_AUDIT_CONCURRENCY",
        "SSE_AUDIT_IDLE_TIMOUT",
        "SSE_AUDIT_NO_CANARY_GUARD",
    ]
    assert warning["did_you_mean"] == {
        "SSE_AUDIT_IDLE_TIMOUT": "SSE_AUDIT_IDLE_TIMEOUT",
        "SSE_AUDIT_NO_CANARY_GUARD": "SSE_AUDIT_CANARY_GUARD",
    }
    assert warning["level"] == "warning"
    assert "s3cret-VALUE" not in repr(lines) + rest[0] + rest[1]


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        # SSE_AUDIT_REQUIRE_KEYS started a proxy with no auth, with a warning at most: the
        # settings whose loss leaves the proxy open are refused when misspelt
        ("SSE_AUDIT_REQUIRE_KEYS", "SSE_AUDIT_REQUIRE_KEY"),
        ("SSE_AUDIT_REQUIRE_KEY_FILES", "SSE_AUDIT_REQUIRE_KEY_FILE"),
        ("SSE_AUDIT_SECRET_HEADER", "SSE_AUDIT_SECRET_HEADERS"),
        ("SSE_AUDIT_ADMIN_HOST", "SSE_AUDIT_ADMIN_HOSTS"),
    ],
)
def test_a_misspelt_setting_is_a_one_line_error_naming_it_and_never_its_value(
    variable: str, meant: str
) -> None:
    proc = run("serve", env={"SSE_AUDIT_UPSTREAM": "http://127.0.0.1:1", variable: "s3cret-VALUE"})
    assert_one_line_error(proc, variable, f"did you mean {meant}?")
    assert proc.returncode == 2
    assert "s3cret-VALUE" not in proc.stderr + proc.stdout


def test_unknown_flag_is_a_one_line_error() -> None:
    assert_one_line_error(run("serve", "--upstream", "http://x", "--frobnicate"), "--frobnicate")


def test_bad_value_in_environment_names_the_variable() -> None:
    proc = run("serve", env={"SSE_AUDIT_UPSTREAM": "http://127.0.0.1:1", "SSE_AUDIT_PORT": "eighty"})
    assert_one_line_error(proc, "SSE_AUDIT_PORT")


@pytest.mark.parametrize(
    ("taken", "free", "named"),
    [("--port", "--metrics-port", "the proxy port"), ("--metrics-port", "--port", "the metrics port")],
)
@pytest.mark.parametrize("workers", ["1", "2"])
# Held with SO_REUSEPORT, as a proxy with --workers holds it: a second such proxy shared the
# port without a word, the two splitting the traffic between their upstreams (outside review).
@pytest.mark.parametrize("reuseport", [False, True], ids=["plain", "reuseport"])
def test_port_in_use_is_a_one_line_error_naming_the_port(
    taken: str, free: str, named: str, workers: str, reuseport: bool
) -> None:
    """The operator learns which of the two ports is taken, and which flag moves it."""
    with socket.socket() as busy:
        if reuseport:
            busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run(
            "serve", "--upstream", "http://127.0.0.1:1", taken, str(port), free, "0", "--workers", workers
        )
    assert_one_line_error(proc, "address already in use", f"{named} 127.0.0.1:{port} ({taken})")


@pytest.mark.parametrize(
    "tool",
    [
        ["probe", "--base-url", "http://127.0.0.1:1/v1", "--model", "m"],
        ["traffic", "--base-url", "http://127.0.0.1:1", "--requests", "1"],
        ["bench", "--smoke"],
    ],
    ids=lambda t: t[0],
)
@pytest.mark.parametrize("where", ["a directory", "in no directory"])
def test_a_json_file_that_cannot_be_written_is_refused_before_the_run(
    tool: list[str], where: str, tmp_path: Path
) -> None:
    """It was found out after the run (a bench of minutes), in a traceback, the results lost."""
    path = tmp_path if where == "a directory" else tmp_path / "missing" / "report.json"
    proc = run(*tool, "--json", str(path), timeout=10)
    assert proc.returncode == 2
    assert_one_line_error(proc, f"--json {path}: ")


def test_a_ca_file_for_a_plain_text_upstream_is_a_one_line_error(tmp_path: Path) -> None:
    """It started: the upstream the operator meant to verify was spoken to unencrypted."""
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    proc = run(*SERVE, "--upstream-ca-file", str(ca_file), timeout=5)
    assert_one_line_error(proc, "--upstream-ca-file", "https://")
    assert proc.returncode == 2
    # the same file for an https:// canary is what it is for
    from sse_audit_proxy.cli.main import build_parser
    from sse_audit_proxy.cli.serve import config_from

    args = build_parser().parse_args(
        [*SERVE, "--upstream-ca-file", str(ca_file), "--canary", "https://127.0.0.1:2"]
    )
    assert config_from(args).proxy.upstream_ca_file == str(ca_file)


@pytest.mark.parametrize(
    "name",
    ["Content-Length", "transfer-encoding", "Connection", "X-Client-Request-Id", "Set-Cookie", "Retry-After"],
)
def test_an_instance_header_that_answers_depend_on_is_a_one_line_error(name: str) -> None:
    """`Content-Length` broke every answer (two lengths), `X-Client-Request-Id` the trace ID;
    `Set-Cookie` set a cookie in every browser behind the proxy."""
    proc = run(
        *SERVE,
        "--instance-header",
        name,
        timeout=5,
    )
    assert proc.returncode == 2
    assert_one_line_error(proc, "--instance-header", "X-Audit-Instance")


def test_a_header_name_with_spaces_around_it_and_a_bracketed_ipv6_host_are_taken() -> None:
    """From a templated environment: `X-Side ` and `[::1]` (as a URL writes it) are what they
    say (second review: a start refused for the space, and `[[::1]]` looked up as a name)."""
    from sse_audit_proxy.cli.options import address, header_name

    assert header_name(" X-Side ") == "X-Side"
    assert address("[::1]") == "::1" and address(" 127.0.0.1 ") == "127.0.0.1"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--canary-sticky-header", "X User"], "--canary-sticky-header"),
        (["--canary-side-header", "a b"], "--canary-side-header"),
        (["--secret-headers", "x-ok, a b"], "--secret-headers"),
        (["--host", ""], "--host"),
        (["--metrics-host", " "], "--metrics-host"),
        (["--max-frame-bytes", "1e400"], "--max-frame-bytes"),  # a traceback (OverflowError)
        (["--log-buffer-bytes", "infk"], "--log-buffer-bytes"),
        (["--log-buffer-bytes", "1"], "--log-buffer-bytes"),  # started; every log line dropped
        (["--max-unsent-bytes", "1e20"], "--max-unsent-bytes"),  # started; every answer a 500
        (["--max-unsent-bytes", "2048m"], "--max-unsent-bytes"),  # the same from 2g (uvloop's int)
        (["--recent-streams", "10000000000000000000"], "--recent-streams"),  # a traceback
        (["--upstream", "http://" + "a" * 64 + ":1"], "--upstream"),  # started; every answer a 500
        (["--host", ".."], "--host"),  # a traceback (IDNA)
        (["--metrics-host", "a" * 64], "--metrics-host"),
        # TLS settings for a plain-text upstream: what was to be verified went out unencrypted
        (["--insecure-upstream"], "--insecure-upstream"),
        # the first list was dropped: ka got 401
        (["--require-key", "ka", "--require-key", "kb"], "--require-key"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_values_that_would_quietly_do_something_else_are_one_line_errors(args: list[str], named: str) -> None:
    """They started without a word (outside review): a header name with a space matches no field
    (stickiness lost, every request drawn at random), and an empty host listened on every
    interface."""
    proc = run(*SERVE, *args, timeout=5)
    assert proc.returncode == 2
    assert_one_line_error(proc, named)


@pytest.mark.parametrize("workers", ["1", "4"])
def test_out_of_file_descriptors_is_a_one_line_error_at_any_point(workers: str) -> None:
    """Short of descriptors, a worker's pipe, its process or the shared directory failed with a
    traceback (only the process's start had been caught), and so did uvloop 0.19's start."""
    import resource

    def runs_with(limit: int) -> subprocess.CompletedProcess[str] | None:
        """How it ended, or None when it started (then stopped here)."""

        def low() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        with subprocess.Popen(
            [*EXE, *SERVE, "--workers", workers],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=low,
            env={k: v for k, v in os.environ.items() if not k.startswith("SSE_AUDIT_")},
        ) as proc:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # a start line, or nothing once it ended
            try:
                # Once a process has started, a failure of another worker comes within moments.
                out, err = proc.communicate(timeout=3 if "proxy_started" in first else 15)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.communicate(timeout=30)
                return None
        return subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err)

    failed = 0
    for limit in range(8, 34, 3):  # descriptors run out at a later step as the limit grows
        ended = runs_with(limit)
        if ended is None:
            break  # enough descriptors from here on
        failed += 1
        assert_one_line_error(ended)
    assert failed  # some limit was too low


def test_the_two_ports_are_one_only_where_their_addresses_meet() -> None:
    from sse_audit_proxy.cli.serve import _overlap

    assert _overlap("127.0.0.1", "127.0.0.1") and _overlap("0.0.0.0", "127.0.0.1") and _overlap("", "::1")
    assert _overlap("::", "::1") and not _overlap("::", "127.0.0.1") and not _overlap("0.0.0.0", "::1")
    assert not _overlap("127.0.0.1", "127.0.0.2")
    proc = run("serve", "--upstream", "http://127.0.0.1:1", "--port", "47123", "--metrics-port", "47123")
    assert_one_line_error(proc, "--port and --metrics-port are both 47123")


@pytest.mark.parametrize(
    ("flag", "url", "host"),
    [
        ("--upstream", "http://127.0.0.1:47124", "127.0.0.1"),
        ("--upstream", "http://localhost:47124/v1", "127.0.0.1"),
        ("--upstream", "http://127.0.0.1:47124", "0.0.0.0"),
        ("--upstream", "http://[::1]:47124", "::"),
        ("--canary", "http://localhost:47124", "127.0.0.1"),
        # spellings a second review looped with
        ("--upstream", "http://127.1:47124", "127.0.0.1"),
        ("--upstream", "http://0:47124", "127.0.0.1"),
        ("--upstream", "http://[::ffff:127.0.0.1]:47124", "0.0.0.0"),
        ("--upstream", "http://127.0.0.1:47124", "localhost"),
    ],
)
def test_an_upstream_that_is_the_proxy_itself_is_refused(flag: str, url: str, host: str) -> None:
    """An upstream at the proxy's own address forwarded each request to itself: one curl made
    about 9,800 requests in 5 s (an outside review)."""
    args = ["--upstream", "http://127.0.0.1:1", flag, url] if flag == "--canary" else [flag, url]
    proc = run("serve", *args, "--host", host, "--port", "47124", "--metrics-port", "0")
    assert_one_line_error(proc, f"{flag} ", "own --port 47124")


def test_an_upstream_at_the_proxys_own_metrics_port_is_refused() -> None:
    # Its clients were served /streams/recent and the inspector (an outside review).
    proc = run("serve", "--upstream", "http://127.0.0.1:47126", "--port", "0", "--metrics-port", "47126")
    assert_one_line_error(proc, "--upstream ", "own --metrics-port 47126")


def test_an_empty_key_file_beside_keys_is_refused_and_an_unused_ca_file_said(tmp_path: Path) -> None:
    empty = tmp_path / "keys"
    empty.write_text("# no keys here\n")
    proc = run("serve", *SERVE[1:], "--require-key", "abcdefgh", "--require-key-file", str(empty))
    assert_one_line_error(proc, "--require-key-file: no keys in")
    # A CA file beside --insecure-upstream does nothing: said, not refused (a debugging switch
    # left beside a mounted CA file must not stop a rollout).
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    https = ["serve", "--upstream", "https://127.0.0.1:1", "--port", "0", "--metrics-port", "0"]
    lines, _ = _lines_to_start([*https, "--upstream-ca-file", str(ca), "--insecure-upstream"], {})
    assert lines[-1]["event"] == "proxy_started"
    assert [line["event"] for line in lines].count("upstream_ca_file_unused") == 1


def test_a_loopback_upstream_on_another_port_or_address_is_not_the_proxy() -> None:
    from sse_audit_proxy.cli.serve import _is_this_proxy

    assert not _is_this_proxy(URL("http://127.0.0.1:47125"), "127.0.0.1", 47124)
    assert not _is_this_proxy(URL("http://127.0.0.2:47124"), "127.0.0.1", 47124)
    assert not _is_this_proxy(URL("http://[::1]:47124"), "0.0.0.0", 47124)  # 0.0.0.0 is IPv4 only
    assert not _is_this_proxy(URL("http://gateway:47124"), "0.0.0.0", 47124)  # names are not resolved
    assert not _is_this_proxy(URL("http://127.0.0.1:47124"), "127.0.0.1", 0)  # a free port: never it
    assert _is_this_proxy(URL("http://127.0.0.1"), "127.0.0.1", 80)  # the scheme's port
    assert not _is_this_proxy(URL("http://localhost:47124"), "127.0.0.2", 47124)  # 127.0.0.1 is not it
    assert not _is_this_proxy(URL("http://127.0.0.1:47124"), "::", 47124)  # `::` is IPv6 only


def test_help_documents_every_flag_with_its_environment_variable() -> None:
    proc = run("serve", "--help")
    assert proc.returncode == 0
    for flag in (
        "--upstream",
        "--host",
        "--port",
        "--metrics-host",
        "--metrics-port",
        "--idle-timeout",
        "--max-models",
        "--log-format",
    ):
        assert flag in proc.stdout
        assert "SSE_AUDIT_" + flag[2:].replace("-", "_").upper() in proc.stdout


def test_version_prints_the_one_version_the_package_and_its_metadata_share() -> None:
    version = sse_audit_proxy.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    # pyproject names no version of its own: the build reads __version__ (one place).
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert metadata.version("sse-audit-proxy") == version  # as built and installed
    proc = run("--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"sse-audit-proxy {version}\n", "")


def test_installed_command_prints_its_version() -> None:
    script = Path(sys.executable).with_name("sse-audit-proxy")  # the [project.scripts] entry point
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=20, check=False)
    assert (proc.returncode, proc.stdout) == (0, f"sse-audit-proxy {sse_audit_proxy.__version__}\n")


@pytest.mark.parametrize("flag", ["--secret-headers", "--canary-sticky-header"])
def test_a_pasted_header_line_is_refused_without_its_value(flag: str) -> None:
    """An operator who pastes `X-Api-Key: sk-…` where a header name goes had the whole line,
    key included, echoed into the error (outside review)."""
    proc = run(*SERVE, flag, "X-Api-Key: sk-proj-Abc123Def456", timeout=5)
    assert proc.returncode == 2
    assert_one_line_error(proc, flag)
    assert "X-Api-Key" in proc.stderr and "sk-proj" not in proc.stderr + proc.stdout


def test_an_ipv6_address_is_bracketed_in_the_urls_logged() -> None:
    """`--host ::1` logged `http://::1:8080`, no URL (a second review)."""
    from sse_audit_proxy.server.listen import http_url

    assert http_url("::1", 8080) == "http://[::1]:8080"
    assert http_url("127.0.0.1", 9464, "/metrics") == "http://127.0.0.1:9464/metrics"
    assert URL(http_url("::", 1, "/metrics")).host == "::"


def test_a_path_and_a_setting_name_not_in_utf_8_are_logged_escaped_and_a_bad_share_still_rolls_back(
    tmp_path: Path,
) -> None:
    # Python keeps such bytes as lone surrogates, which orjson refused: a traceback and exit 1
    # at start, and every poll of the percent file raised, the mistyped rollback not done.
    percent_file = tmp_path / "percent\udcff"
    percent_file.write_text("O")
    lines, _ = _lines_to_start(
        [*SERVE, "--canary", "http://127.0.0.1:2", "--canary-percent-file", str(percent_file)],
        {"SSE_AUDIT_\udcff": "1"},
    )
    events = {line["event"]: line for line in lines}
    assert events["unknown_settings"]["names"] == ["SSE_AUDIT_\\udcff"]
    assert events["canary_percent_rejected"]["path"].endswith("percent\\udcff")
    assert events["proxy_started"]["canary_percent"] == 0.0


# From an outside review of configuration edges -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "line"),
    [("k1,k2\n", 1), ("key1 # note\n", 1), ("# keys\nBearer sk-abc123\n", 2), ("ok-key\nk\tk\n", 2)],
)
def test_a_key_file_line_that_cannot_be_a_key_is_a_one_line_error_not_shown(
    tmp_path: Path, text: str, line: int
) -> None:
    """Each was kept whole as one key that no client presents: every request 401, nothing said."""
    keys = tmp_path / "keys"
    keys.write_text(text)
    proc = run(*SERVE, "--require-key-file", str(keys))
    assert_one_line_error(proc, f"line {line} ")
    assert "k1" not in proc.stderr and "sk-abc" not in proc.stderr and "key1" not in proc.stderr


def test_a_key_given_with_its_auth_scheme_is_a_one_line_error() -> None:
    proc = run(*SERVE, env={"SSE_AUDIT_REQUIRE_KEY": "Bearer sk-abc123"})
    assert_one_line_error(proc, "auth scheme")
    assert "sk-abc" not in proc.stderr


@pytest.mark.parametrize("variable", ["SSE_AUDIT_API_KEY", "SSE_AUDIT_AUTH_TOKEN", "sse_audit_require_key"])
def test_a_variable_that_guesses_at_inbound_keys_is_refused_not_ignored(variable: str) -> None:
    """The proxy started open with a warning: the key its operator meant to require was never
    read. Another command's (probe's SSE_AUDIT_API_KEY_ENV) is not refused."""
    proc = run(*SERVE, env={variable: "s3cret-VALUE"})
    assert_one_line_error(proc, variable, "SSE_AUDIT_REQUIRE_KEY")
    assert "s3cret-VALUE" not in proc.stderr


def test_a_flag_on_the_command_line_wins_over_a_bad_variable() -> None:
    proc = run("serve", "--upstream", "http://127.0.0.1:1", "--port", "80x", env={"SSE_AUDIT_PORT": "eighty"})
    assert_one_line_error(proc, "--port")
    with socket.socket() as s:  # the flag's good value is taken: the variable's is never read
        s.bind(("127.0.0.1", 0))
        taken = s.getsockname()[1]
        s.listen()
        proc = run(*SERVE[:3], "--port", str(taken), "--metrics-port", "0", env={"SSE_AUDIT_PORT": "eighty"})
    assert_one_line_error(proc, str(taken))
    assert "SSE_AUDIT_PORT" not in proc.stderr


@pytest.mark.parametrize("value", ["\uff18\uff10", "\u0668\u0660"])  # full-width and Arabic-Indic 80
def test_digits_of_other_scripts_are_no_number(value: str) -> None:
    assert_one_line_error(run(*SERVE[:3], "--port", value), "not a port number")
    assert_one_line_error(run(*SERVE, "--idle-timeout", value), "not a number")


def test_a_closed_stdout_is_a_one_line_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSE_AUDIT_")}
    proc = subprocess.run(
        [*EXE, *SERVE],
        stdout=None,
        stderr=subprocess.PIPE,
        text=True,
        timeout=20,
        env=env,
        check=False,
        preexec_fn=lambda: os.close(1),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "sse-audit-proxy: error: stdout is closed: the log lines go there (send it to a file or /dev/null)"
    )


def test_the_tools_refuse_an_empty_host_or_variable_name(tmp_path: Path) -> None:
    assert_one_line_error(run("gateway", "--host", "", "--port", "0"), "--host")
    assert_one_line_error(run("probe", "--api-key-env", "", "http://127.0.0.1:1/v1"), "--api-key-env")
    fifo = tmp_path / "evidence"
    os.mkfifo(fifo)
    assert_one_line_error(
        run("evidence-to-case", str(fifo), "--out", str(tmp_path), timeout=10), "regular file"
    )


def test_a_switch_on_the_command_line_wins_over_a_bad_variable_and_other_commands_ignore_it() -> None:
    env = {"SSE_AUDIT_CANARY_GUARD": "enabled"}
    assert_one_line_error(run(*SERVE, env=env), "SSE_AUDIT_CANARY_GUARD")
    assert run("--version", env=env).returncode == 0
    assert run("evidence-to-case", "--help", env=env).returncode == 0
    proc = run(*SERVE, "--no-canary-guard", "--upstream", "http://127.0.0.1:1:x", env=env)
    assert_one_line_error(proc, "--upstream")  # past the variable: it was never read


@pytest.mark.parametrize("variable", ["SSE_AUDIT_UPSTREAM_KEY", "SSE_AUDIT_CANARY_TOKEN"])
def test_an_auth_guess_near_another_setting_is_refused_too(variable: str) -> None:
    assert_one_line_error(run(*SERVE, env={variable: "s3cret-VALUE"}), variable, "SSE_AUDIT_REQUIRE_KEY")
