"""The canary guard: is the canary worse than the baseline? Records in, a decision out.

Pure: no clocks, no I/O, no globals (each stream comes with the time it ended). It keeps the
canary's last `window` finished streams and the baseline's of the same time (at least its last
`min_streams`; up to BASELINE_STORE windows), and after each stream asks two questions, each a
statistical test rather than a comparison of raw figures, so that noise between two equal
sides does not trip it. Either is asked of the baseline's streams of the canary's time, then
of its last `window` (more streams: a high share's last steps, and 100 %, judged as fast as
with them alone), but only when those of the same time do not say the canary is no worse.
When each side's window was its last `window` streams alone, at a 10 % share the baseline's
spanned a ninth of the canary's time, so after an incident that hit both sides alike the
baseline had forgotten it while the canary's window still held it, and a healthy canary was
rolled back (an outside review); a first cut that cut the canary's window to the baseline's
time made a bad canary at a small share never trip (a second).

1. **Bad share.** Is the canary's share of bad streams (outcomes truncated, upstream_error,
   timeout; anomalies buffered, bursty, missing_done, missing_finish_reason, missing_usage,
   invalid_tool_arguments, wrong_content_type, and not_streamed on a route whose API always
   streams when asked; a stream the client left on a malformed frame or after waiting a second
   for its first token) above the baseline's by more than
   `margin` points? Tested with Newcombe's hybrid score interval for a difference of
   proportions (built from two Wilson intervals): trip when the interval's lower bound, at
   one-sided z = 3.09 (0.1 %), exceeds the margin, once each side has `min_streams` streams
   (a baseline of a handful said little: one client sticky to the canary with its own failures
   tripped it against 3 baseline streams).
2. **TTFT.** Is the canary's p95 time to first token more than `ttft_ratio` times the
   baseline's? Tested distribution-free with order statistics: trip when a lower confidence
   bound of the canary's p95 exceeds `ttft_ratio` times an upper confidence bound of the
   baseline's (each at 1 %). An upper bound of a p95 exists only from 90 samples on
   (0.95^90 < 0.01), so this rule waits for 90 baseline TTFTs and `min_streams` canary ones.

Streams that say nothing about the upstream are not counted (`judged`): those the client
abandoned (`client_disconnect`; but one left on a malformed frame, which the SDK raised on, or
after waiting GAVE_UP_AFTER for a first token, or for anything after a token in a stream
without keep-alives, is bad; the first of these only when it waited longer than the
baseline's median first token, judged once it has `min_streams` of them), and those the upstream
refused as the client's error (a 4xx: a bad key, an unknown model, a malformed request, the
client's own quota). A client picks its side with the sticky header, so counting its refusals
let one client trip a healthy canary, or keep a bad one running by flooding the baseline with
them. docs/operate/canary.md explains how the defaults were chosen.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sse_audit_proxy.core.dialects import DIALECTS, Generic
from sse_audit_proxy.core.record import AuditRecord

BAD_OUTCOMES = frozenset({"truncated", "upstream_error", "timeout"})
# `wrong_content_type` too: an event stream labelled `text/plain`. `not_streamed` only on the
# routes in STREAMING_ROUTES: a gateway that answers `"stream": true` with a whole body is the
# classic cutover fault, but OpenAI's own whisper-1 answers a transcription stream request so,
# and one client's mix of routes made a healthy canary bad.
BAD_ANOMALIES = frozenset(
    {
        "buffered",
        "bursty",
        "missing_done",
        "missing_finish_reason",
        "missing_usage",
        "invalid_tool_arguments",
        "wrong_content_type",
        "held_open",
        "gzip_members",
    }
)
NOT_STREAMED = "not_streamed"
STREAMING_ROUTES = frozenset(d.route for d in DIALECTS if d.always_streams)
# On a route with no dialect the audit knows only the transport: an error frame there may be the
# client's own (Ollama's `/api/pull` of a model that does not exist answers 200 and an error
# line), and clumps of frames the endpoint's nature (a pull's progress). Only a broken or cut
# body, a timeout and an error status say something about the upstream there.
UNKNOWN_ROUTE = Generic.route
IGNORED_OUTCOMES = frozenset({"client_disconnect"})
GAVE_UP_AFTER = 1.0  # seconds a client waited for a first token before it left: a bad stream
# 4xx statuses that do not refuse a request as the client's error: 499, the proxy's record of a
# client that left. A rate limit (429) and a request timeout (408) may be the client's own: one
# client sticky to the canary, over its own key's quota, tripped a healthy canary (outside
# review; Envoy's outlier detection and Flagger do not count 4xx either). A canary without the
# baseline's quotas shows in SSEAuditCanaryRateLimited, which compares the sides' 429s and 408s.
NOT_CLIENT_ERRORS = frozenset({499})
Z_SHARE = 3.09  # one-sided 0.1 %: the test runs after every stream, so it must be strict
# The baseline's streams of the canary's time must show the canary worse (one-sided 0.5 %; asked
# after every stream, so strict; by the margin where they are a window's worth: worse at all let
# chance through, and a shared outage tripped small shares, an outside review) before its older
# ones may be the comparison: with them alone, an incident both sides shared still showed on the
# canary long after the baseline's last window had forgotten it. Simulated
# (tests/unit/test_guard_edges.py): shared incidents tripped 61 runs in 140 before, 4 now; a
# canary failing at 90 % or more is stopped after about 50 failed streams, against 29 before (a
# bound of 0 in 20 baseline streams).
Z_SAME_TIME = 2.58
TTFT_QUANTILE = 0.95
TTFT_ALPHA = 0.01
EVIDENCE = 5  # trace IDs of offending streams named in a trip


# The window's largest size: each new sample count until it is full works out its p95 ranks
# (about 2 ms at 5,000; 48 ms at 100,000, on the event loop).
MAX_GUARD_WINDOW = 5000


@dataclass(slots=True, frozen=True)
class GuardSettings:
    window: int = 200
    margin: float = 5.0  # percentage points
    min_streams: int = 20
    ttft_ratio: float = 2.0
    # ... and by this many seconds: a canary in a farther zone adds its round trips to every
    # first token (a fast gateway 150 ms farther away doubled its p95, 80 to 231 ms, and was
    # rolled back; outside review).
    ttft_floor: float = 0.25


# The baseline keeps this many windows of streams, so that its span covers the canary's window
# down to a share of about 1 / (1 + BASELINE_STORE), 0.5 %, and BASELINE_STORE_MAX at most (at
# 20, 5 %, a canary at 1 % still held a shared outage's streams when the baseline had forgotten
# it, and a healthy canary was rolled back after every such outage: an outside review). About
# 200 bytes a stream: 8 MB at the default window, 20 MB at most.
BASELINE_STORE = 200
BASELINE_STORE_MAX = 100_000
# Above this many samples the p95's confidence ranks come from the normal approximation of the
# binomial, a rank more cautious at most (exact below: its sum costs 0.25 ms at 500 samples, once
# per count, on the event loop; 2 ms at 2,000).
EXACT_RANKS_MAX = 500


@dataclass(slots=True, frozen=True)
class Sample:
    """What the guard needs of one finished stream."""

    trace_id: str
    bad: bool
    ttft: float | None
    at: float = 0.0  # when it ended (any clock that does not go back)
    # A stream the client left after waiting this long for a first token (`first_token_wait`):
    # bad only when it waited longer than the baseline's median first token (_judge_held).
    waited: float | None = None


@dataclass(slots=True, frozen=True)
class Trip:
    rule: str  # "bad_share" or "ttft_p95"
    baseline: dict[str, Any]
    canary: dict[str, Any]
    threshold: str
    trace_ids: list[str]


def client_error(status: int) -> bool:
    """An answer that refuses the request as the client's error: a bad key, an unknown model."""
    return 400 <= status < 500 and status not in NOT_CLIENT_ERRORS


# What a stream the client left can still show of the upstream: a frame the SDK raised on and
# closed (the openai SDKs on frames with no data after an `id:` line), a tool call's arguments
# that were broken when every choice had finished.
_LEFT_ON = ("malformed_frame", "invalid_tool_arguments")


def _left_on(anomalies: Sequence[str]) -> bool:
    return any(name in anomalies for name in _LEFT_ON)


def judged(
    outcome: str, status: int, anomalies: Sequence[str] = (), gave_up: bool = False, route: str = ""
) -> bool:
    """Does this stream say something about the upstream's streaming? A stream the client
    left does when it left on something the upstream got wrong (_LEFT_ON), or when it gave up
    waiting for a first token (`gave_up`)."""
    if outcome in IGNORED_OUTCOMES:  # (on the unknown route a pause may be the endpoint's own)
        return route != UNKNOWN_ROUTE and (gave_up or _left_on(anomalies))
    if outcome == "upstream_error" and route == UNKNOWN_ROUTE and status < 400:
        return False  # an error frame on a route with no dialect: the client's or the upstream's
    return not (outcome == "upstream_error" and client_error(status))


def is_bad(outcome: str, anomalies: Sequence[str], gave_up: bool = False, route: str = "") -> bool:
    if outcome in IGNORED_OUTCOMES:  # judged only for one of judged()'s reasons: all bad
        return gave_up or _left_on(anomalies)
    if outcome in BAD_OUTCOMES:
        return True
    if not anomalies or route == UNKNOWN_ROUTE:
        return False
    if not BAD_ANOMALIES.isdisjoint(anomalies):
        return True
    return route in STREAMING_ROUTES and NOT_STREAMED in anomalies


def gave_up_waiting(rec: AuditRecord) -> bool:
    """The client left with no token GAVE_UP_AFTER or more after the whole request reached the
    upstream (head or not; time the client itself held the stream up not counted), or, once
    tokens came, GAVE_UP_AFTER or more after a last frame that was a token, with no keep-alive
    in the stream: what a canary that hangs, at the start or mid-answer, looks like, clients'
    read timeouts being seconds and --idle-timeout minutes. A side whose tokens come within
    the second gives none; one whose honest pauses are longer gives them for clients that
    cancel sooner, on both sides alike (a client sticky to one side with such requests can move
    its share, as it can the TTFT p95)."""
    s = rec.stream
    if s is None or s.outcome.value not in IGNORED_OUTCOMES:
        return False
    if s.ttft is not None:
        # Stalled mid-answer: its last frame was a token, and nothing came after it, not even a
        # keep-alive. A stream with keep-alives, or that was between tokens (a tool's input
        # being accumulated, a web search, a finish waiting for `[DONE]`), has pauses of its
        # own that a user may stop in (a second review: Claude's tool inputs come after
        # seconds of pings).
        return (
            s.last_frame_content
            and s.keepalives == 0
            and s.quiet_at_end is not None
            and s.quiet_at_end >= GAVE_UP_AFTER
        )
    return (
        rec.request_sent is not None  # the upstream had the whole request
        and rec.duration - rec.request_sent - s.client_held >= GAVE_UP_AFTER
    )


def first_token_wait(rec: AuditRecord) -> float | None:
    """How long a client that gave up before any token waited for it (gave_up_waiting), else
    None."""
    s = rec.stream
    if s is None or s.ttft is not None or rec.request_sent is None or not gave_up_waiting(rec):
        return None
    return rec.duration - rec.request_sent - s.client_held


def judge(rec: AuditRecord) -> bool | None:
    """A finished stream's word to the guard: bad or not, None when it says nothing."""
    s = rec.stream
    if s is None or s.refused:  # (refused in-band as the client's error: as a 4xx)
        return None
    outcome, gave_up = s.outcome.value, gave_up_waiting(rec)
    route = UNKNOWN_ROUTE if s.read_as_other else rec.route  # (not the route's provider's)
    if not judged(outcome, rec.status, s.anomalies, gave_up, route):
        return None
    return is_bad(outcome, s.anomalies, gave_up, route)


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when nothing was seen."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_lower_bound(bad_c: int, n_c: int, bad_b: int, n_b: int, z: float) -> float:
    """Newcombe (1998) method 10: lower bound of p_canary - p_baseline."""
    lc, _ = wilson(bad_c, n_c, z)
    _, ub = wilson(bad_b, n_b, z)
    pc = bad_c / n_c if n_c else 0.0
    pb = bad_b / n_b if n_b else 0.0
    return (pc - pb) - math.sqrt((pc - lc) ** 2 + (ub - pb) ** 2)


def _binom_cdf(n: int, p: float) -> list[float]:
    """[P(X <= k) for k in 0..n], X ~ Binomial(n, p), 0 < p < 1. Each term in logs: as
    `comb(n, i) * p**i * ...` it passed the float range from n = 1,030 (--canary-guard-window)."""
    out, total = [], 0.0
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    for i in range(n + 1):
        total += math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
        out.append(total)
    return out


@functools.lru_cache(maxsize=4096)  # a pure function of small integers
def quantile_bound_ranks(
    n: int, q: float = TTFT_QUANTILE, alpha: float = TTFT_ALPHA
) -> tuple[int | None, int | None]:
    """1-based ranks (lower, upper) of order statistics bounding the q-quantile of n samples,
    each with confidence 1 - alpha; None where n samples cannot bound it."""
    if n > EXACT_RANKS_MAX and q == TTFT_QUANTILE and alpha == TTFT_ALPHA:
        # Binomial(n, q) is near normal here (n q (1 - q) > 23); z of 1 % one-sided, and one
        # rank more each way than the continuity correction: the binomial's skew put a lower
        # rank one above the exact one at 112 sizes (a second review).
        half = 2.3263478740408408 * math.sqrt(n * q * (1.0 - q))
        return max(1, math.floor(n * q - half) - 1), min(n, math.ceil(n * q + half) + 1)
    lower = upper = None
    cdf = _binom_cdf(n, q)
    # X_(k) <= q-quantile with probability P(Bin(n, q) >= k).
    for k in range(n, 0, -1):
        if 1.0 - cdf[k - 1] >= 1.0 - alpha:
            lower = k
            break
    # X_(k) >= q-quantile with probability P(Bin(n, q) <= k - 1).
    for k in range(1, n + 1):
        if cdf[k - 1] >= 1.0 - alpha:
            upper = k
            break
    return lower, upper


# A p95's upper confidence bound at 1 % needs 90 samples (0.95^90 < 0.01).
_FEWEST_FOR_AN_UPPER_BOUND = 90


class _Side:
    """One side's streams, oldest first: those in the span the sides are compared over, with
    their bad count and their TTFTs kept sorted as streams come and go, and older ones kept
    (up to `store` in all) for a comparison near 100 %."""

    def __init__(self, store: int) -> None:
        self.store = store
        self.older: deque[Sample] = deque()
        self.samples: deque[Sample] = deque()  # the span
        self.bad = 0
        self.ttfts: list[float] = []

    @property
    def oldest(self) -> float | None:
        first = self.older[0] if self.older else self.samples[0] if self.samples else None
        return None if first is None else first.at

    def window_start(self, n: int) -> float | None:
        """When the newest `n` streams (all it keeps, if fewer) began to end."""
        if len(self.samples) >= n:
            return self.samples[-n].at
        if self.older:
            return self.older[max(0, len(self.older) - (n - len(self.samples)))].at
        return self.samples[0].at if self.samples else None

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        self._count(sample, 1)
        if len(self.older) + len(self.samples) > self.store:
            if self.older:
                self.older.popleft()
            else:
                self._count(self.samples.popleft(), -1)

    def since(self, start: float) -> None:
        """The span starts at `start`: streams that ended before it leave it (and are kept)."""
        span = self.samples
        while span and span[0].at < start:
            gone = span.popleft()
            self._count(gone, -1)
            self.older.append(gone)

    def _count(self, sample: Sample, sign: int) -> None:
        self.bad += sample.bad * sign
        if sample.ttft is not None:
            if sign > 0:
                bisect.insort(self.ttfts, sample.ttft)
            else:
                del self.ttfts[bisect.bisect_left(self.ttfts, sample.ttft)]

    def figures(self) -> dict[str, Any]:
        n = len(self.samples)
        ttfts = self.ttfts
        p95 = ttfts[min(len(ttfts) - 1, math.ceil(0.95 * len(ttfts)) - 1)] if ttfts else None
        return {
            "streams": n,
            "bad": self.bad,
            "bad_percent": round(100.0 * self.bad / n, 2) if n else None,
            "ttft_p95_ms": None if p95 is None else round(p95 * 1000.0, 3),
        }


class Guard:
    """Feed it finished streams per side; `observe` returns a Trip the first time a rule holds
    (then nothing until `reset`)."""

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        window = self.settings.window
        self._store = max(window, min(BASELINE_STORE * window, BASELINE_STORE_MAX))
        self.baseline = _Side(self._store)
        self._recent = _Side(window)  # the baseline's last `window` streams, whenever they ended
        # Give-ups before a first token (True: the canary's), until they can be judged.
        self._held: deque[tuple[bool, Sample]] = deque(maxlen=window)
        self.reset()

    def reset(self) -> None:
        """Start over (the operator set a new share): forget the canary's window and any trip.
        The baseline's streams stay: at 100 % it gets none, and a reset that forgot them left
        the last step of a ramp unguarded; its span starts again with the canary's."""
        self.canary = _Side(self.settings.window)
        self.tripped: Trip | None = None
        self._held = deque(((c, x) for c, x in self._held if not c), maxlen=self.settings.window)

    def observe(self, canary: bool, sample: Sample) -> Trip | None:
        """A finished stream; the baseline's are kept while tripped too (a trip cleared later
        compares with the baseline's streams of that time, not of before the trip)."""
        if canary and self.tripped is not None:
            return None
        if sample.waited is None:
            self._add(canary, sample)
        else:
            self._held.append((canary, sample))
        self._judge_held()
        if self.tripped is not None:
            return None
        self._align()
        trip = self._bad_share() or self._ttft()
        if trip is not None:
            self.tripped = trip
        return trip

    def _add(self, canary: bool, sample: Sample) -> None:
        if canary:
            self.canary.add(sample)
        else:
            self.baseline.add(sample)
            self._recent.add(sample)

    def _usual(self, side: _Side) -> float | None:
        """A side's median first token, once it has `min_streams` of them."""
        ttfts = side.ttfts
        return ttfts[len(ttfts) // 2] if len(ttfts) >= self.settings.min_streams else None

    def _judge_held(self) -> None:
        """Streams a client gave up on before a first token count (bad) only when it waited
        longer than the baseline's median first token (of its last `window` streams), on
        either side: one yardstick for both, so that impatient clients spread over the sides
        weigh alike on each. A client sticky to one side whose own timeout is shorter than the
        model's usual first token (1.2 s against both sides' 1.5 s) made every one of its
        streams bad there, and a healthy canary was rolled back (an outside review); it would
        have given up on the other side too. The median, not a high quantile: 11 slow streams
        in 200 (a client's, or a reasoning model's share) moved the baseline's p95 past the
        clients' timeouts, and a canary that never answered was never stopped (a second
        review). The baseline's own, not the canary's: weighed against the canary's, the
        baseline's give-ups waited for a new canary's first tokens, and a healthy canary whose
        give-ups were counted at once was rolled back against a baseline with none (a fourth).
        They wait here (up to `window` of them) until the baseline has `min_streams` first
        tokens (both sides starting at once), then are judged, not dropped."""
        held = self._held
        if not held:
            return
        usual = self._usual(self._recent)
        if usual is None:
            return
        while held:
            canary, sample = held.popleft()
            if sample.waited is not None and sample.waited > usual:
                self._add(canary, sample)

    def _align(self) -> None:
        """The baseline's span: from the canary window's first stream, or from its own
        `min_streams`-th newest if that is earlier (too few of its streams in the canary's
        time: a share near 100 %, a baseline gone quiet)."""
        start = self.canary.oldest
        if start is None:
            return
        b = self.baseline
        enough = b.window_start(self.settings.min_streams)
        self.baseline.since(start if enough is None else min(start, enough))

    def _last_window(self) -> _Side:
        """The baseline's last `window` streams, whenever they ended."""
        return self._recent

    def _bad_share(self) -> Trip | None:
        """Against the baseline's streams of the canary's time; or against its last `window`
        (more of them: a high share's last steps judged as fast as before) when those of the
        same time do not say the canary is as bad: an incident both sides shared is no trip."""
        c, s = self.canary, self.settings
        if len(c.samples) < s.min_streams:
            return None
        same_time = self.baseline
        trip = self._share_against(same_time, Z_SHARE)
        if trip is not None:
            return trip
        # The gate: the baseline of the same time shows the canary worse, by the margin where it
        # has a window's streams (a small share, whose window spans long), at all where fewer (a
        # ramp's last steps, whose few same-time streams cannot bound a few points: by the margin
        # there, a canary failing a quarter of its streams at 100 % ran on, a second review).
        # None when no baseline stream ended in the canary's time (100 %): its span is then its
        # last streams from before, as the last window's are, only fewer.
        start = self.canary.oldest
        none_since = start is not None and bool(same_time.samples) and same_time.samples[-1].at < start
        if not none_since:
            margin = None if len(same_time.samples) >= s.window else 0.0
            if self._share_against(same_time, Z_SAME_TIME, margin) is None:
                return None
        return self._share_against(self._last_window(), Z_SHARE)

    def _share_against(self, b: _Side, z: float, margin: float | None = None) -> Trip | None:
        c, s = self.canary, self.settings
        margin = s.margin if margin is None else margin
        n_c, n_b = len(c.samples), len(b.samples)
        if n_c < s.min_streams or n_b < s.min_streams:
            return None
        if c.bad * n_b <= b.bad * n_c:  # not worse at all: skip the arithmetic
            return None
        bound = difference_lower_bound(c.bad, n_c, b.bad, n_b, z)
        if bound * 100.0 <= margin:
            return None
        offending = [x.trace_id for x in reversed(c.samples) if x.bad][:EVIDENCE]
        return Trip(
            "bad_share",
            b.figures(),
            c.figures(),
            f"canary bad share exceeds baseline's by more than {s.margin:g} points "
            f"(lower bound {bound * 100.0:.1f} points, z={z})",
            offending,
        )

    def _ttft(self) -> Trip | None:
        """Against the baseline's streams of the canary's time when they hold enough first
        tokens for a bound, else its last `window`; either way not when the same time's own
        p95 (given `min_streams` first tokens) says the baseline was as slow: a slow spell both
        sides shared is no trip."""
        s = self.settings
        if len(self.canary.samples) < s.min_streams:
            return None
        same_time = self.baseline
        baseline = same_time
        if len(baseline.ttfts) < _FEWEST_FOR_AN_UPPER_BOUND:
            baseline = self._last_window()
        c_ttft, b_ttft = self.canary.ttfts, baseline.ttfts
        if len(c_ttft) < s.min_streams or not b_ttft:
            return None
        c_lower, _ = quantile_bound_ranks(len(c_ttft))
        _, b_upper = quantile_bound_ranks(len(b_ttft))
        if c_lower is None or b_upper is None:
            return None
        canary_low, baseline_high = c_ttft[c_lower - 1], b_ttft[b_upper - 1]
        if canary_low <= s.ttft_ratio * baseline_high or canary_low - baseline_high <= s.ttft_floor:
            return None
        if baseline is not same_time and len(same_time.ttfts) >= s.min_streams:
            now = _nearest_rank(same_time.ttfts)
            if canary_low <= s.ttft_ratio * now or canary_low - now <= s.ttft_floor:
                return None
        slowest = sorted(
            (x for x in self.canary.samples if x.ttft is not None), key=lambda x: x.ttft or 0.0, reverse=True
        )[:EVIDENCE]
        return Trip(
            "ttft_p95",
            baseline.figures(),
            self.canary.figures(),
            f"canary p95 TTFT above {s.ttft_ratio:g}x the baseline's and {s.ttft_floor:g} s more "
            f"(canary at least {canary_low * 1000:.0f} ms, baseline at most {baseline_high * 1000:.0f} ms)",
            [x.trace_id for x in slowest],
        )


def _nearest_rank(ttfts: list[float]) -> float:
    """The p95 of sorted first-token times, by the nearest rank."""
    return ttfts[min(len(ttfts) - 1, math.ceil(0.95 * len(ttfts)) - 1)]
