"""Keys and tokens of well-known shapes, wherever they sit in a string.

The log lines' redaction and the evidence's header scrubbing blank them (sinks/redaction.py); a
client's model name that holds one (a key pasted into `model`) is not shown at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from urllib.parse import quote, quote_plus

# Keys and tokens by the word they start with (what each is, then what follows the word):
# Google API keys and OAuth tokens, AWS access key IDs, OpenAI and Anthropic keys, JWTs, GitHub,
# GitLab, Slack, Stripe, npm, SendGrid and Databricks tokens, and the keys of other model
# providers and tools a gateway fronts (Groq, Hugging Face, xAI, Replicate, Perplexity, NVIDIA,
# Fireworks, Cerebras, Pinecone, Tavily, LangSmith, Together, Jina, Voyage, ElevenLabs, Cartesia,
# Hugging Face organisations) and AWS Bedrock's API keys. Each starts where no letter or digit is
# before it: after a space, a punctuation mark or `_` (`req_sk-...`, `key_AIza...`: `\b` took
# `_` for a letter).
_LONG = "[A-Za-z0-9]{20,}"
PREFIXED_KEYS: tuple[tuple[str, str], ...] = (
    ("AIza", "[0-9A-Za-z_-]{20,}"),
    *((aws, "[0-9A-Z]{16}(?![0-9A-Za-z])") for aws in ("AKIA", "ASIA")),
    ("ya29.", "[0-9A-Za-z_.-]+"),
    ("GOCSPX-", "[0-9A-Za-z_-]{20,}"),
    ("sk-", "[A-Za-z0-9_-]{8,}"),
    ("eyJ", r"[0-9A-Za-z_-]+\.[0-9A-Za-z_-]+\.[0-9A-Za-z_-]*"),
    *((f"gh{kind}_", _LONG) for kind in "pousr"),
    ("github_pat_", "[A-Za-z0-9_]{20,}"),
    *((f"{gitlab}-", "[0-9A-Za-z_-]{20,}") for gitlab in ("glpat", "gldt", "glrt", "glptt", "glsoat")),
    *((f"xox{kind}-", "[0-9A-Za-z-]+") for kind in "abpre"),
    ("xapp-", "[0-9A-Za-z-]{20,}"),
    *((f"{stripe}_", "[0-9A-Za-z]{10,}") for stripe in ("sk_live", "sk_test", "rk_live", "rk_test", "whsec")),
    ("npm_", _LONG),
    ("SG.", r"[0-9A-Za-z_-]{16,}\.[0-9A-Za-z_-]{16,}"),
    ("dapi", "[0-9a-f]{32}"),
    *((f"{word}_", _LONG) for word in ("gsk", "hf", "r8", "fw", "jina")),
    ("pcsk_", "[A-Za-z0-9_]{20,}"),
    ("api_org_", _LONG),
    ("tgp_v1_", "[A-Za-z0-9_-]{20,}"),
    ("ABSK", "[A-Za-z0-9+/=]{40,}"),
    ("bedrock-api-key-", "[A-Za-z0-9+/=%_-]{40,}"),
    ("sk_", "[0-9a-f]{40,}"),
    ("sk_car_", "[A-Za-z0-9_-]{16,}"),
    ("pa-", "[A-Za-z0-9_-]{40,}"),
    *((f"{word}-", _LONG) for word in ("xai", "pplx", "csk")),
    ("tvly-", "[A-Za-z0-9-]{20,}"),
    ("nvapi-", "[A-Za-z0-9_-]{20,}"),
    ("lsv2_", "[A-Za-z0-9_]{20,}"),
)
# What each key begins with, lower-cased: a text without any of them holds none of the shapes
# (the log lines' redaction searches a line for these before it looks closer).
KEY_WORDS = tuple(sorted({prefix.lower() for prefix, _ in PREFIXED_KEYS}))
_START = r"(?<![0-9A-Za-z])"
# An OpenAI-style key glued to a word (`prodsk-...`, `req1sk-...`): a legacy key's 48 letters and
# digits in both cases with no separator, or a project key's mixed-case tail; not a word's tail
# with an ID (`task-<uuid>`, `kiosk-assistant-gpt-4o-mini-2024-07-18`: separators, one case).
# OpenAI's and Anthropic's project, service and admin keys are told by their second word, also
# glued to a digit (`req1sk-proj-...`), not to a letter (`task-admin-assistant`).
GLUED_KEY = (
    r"sk-(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Z])(?=[A-Za-z0-9]*[a-z])[A-Za-z0-9]{40,}"
    r"|sk-(?:proj|ant|svcacct|admin)-(?=[\w-]*[0-9])(?=[\w-]*[A-Z])(?=[\w-]*[a-z])[\w-]{40,}"
)
KEY_SHAPES = re.compile(
    _START
    + "(?:"
    + "|".join(re.escape(prefix) + rest for prefix, rest in PREFIXED_KEYS)
    + ")"
    + r"|(?<![A-Za-z])sk-(?:proj|ant|svcacct|admin)-[A-Za-z0-9_-]{20,}"
    + f"|{GLUED_KEY}"
)
# A credential after its HTTP scheme: a whole `Authorization` value pasted where it does not go
# (a token of 8 or more: not words, as in `basic model`).
_AUTH_VALUE = re.compile(r"(?i)\b(?:bearer|basic)\s+[^\s]{8}")


def holds_key(text: str) -> bool:
    """Whether `text` holds a key of a well-known shape, also glued to a word by `_`
    (`gpt-4o_sk-...`), or a credential after `Bearer`/`Basic`."""
    return bool(KEY_SHAPES.search(text) or _AUTH_VALUE.search(text))


# A request's own credential shorter than this is not looked for elsewhere: no key is so
# short, and a common value (`1`, `true`) would blank whatever it matched.
MIN_CREDENTIAL = 8


def credentials_in(
    fields: Iterable[tuple[str, str]], secret_name: Callable[[str], bool] = lambda _: True
) -> list[str]:
    """The credentials in a request's secret fields (lower-case name, value): each whole value,
    the token after an auth scheme, the value of each cookie whose name is a secret's
    (`secret_name`: a session, a token; not a preference such as `theme=dark`), and each as a
    URL would carry it percent-encoded; longest first, so that a whole value is blanked before a
    part of it. An upstream may echo them in its answer's head, and a client may send one as its
    trace ID or model: none may show them."""
    found: set[str] = set()
    for name, value in fields:
        value = value.strip()
        if name == "cookie":  # not the whole field: `theme=dark; last_model=gpt-4o` is no secret
            for pair in value.split(";"):
                key, _, cookie = pair.partition("=")
                if secret_name(key.strip()):
                    found.add(cookie.strip())
        else:
            found.add(value)
            found.add(value.partition(" ")[2].strip())
    # (Header bytes that are not UTF-8 are read with surrogateescape: they encode back as they came.)
    found.update(
        [quote(c, safe="", errors="surrogateescape") for c in found]
        + [quote_plus(c, errors="surrogateescape") for c in found]
    )
    return sorted((c for c in found if len(c) >= MIN_CREDENTIAL), key=len, reverse=True)


def shows_credential(text: str, credentials: Iterable[str]) -> bool:
    """Whether `text` holds one of `credentials`, or is a long enough part of one."""
    return any(c in text or (len(text) >= MIN_CREDENTIAL and text in c) for c in credentials)
