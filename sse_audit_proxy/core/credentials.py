"""Keys and tokens of well-known shapes, wherever they sit in a string.

The log lines' redaction and the evidence's header scrubbing blank them (sinks/redaction.py); a
client's model name that holds one (a key pasted into `model`) is not shown at all.
"""

from __future__ import annotations

import re

# Google API keys and OAuth tokens, AWS access key IDs, OpenAI and Anthropic keys, JWTs, GitHub
# and Slack tokens, and the keys of other model providers a gateway fronts (Groq, Hugging Face,
# xAI, Replicate, Perplexity, NVIDIA, Fireworks). Each starts where no letter or digit is before
# it: after a space, a punctuation mark or `_` (`req_sk-...`, `key_AIza...`: `\b` took `_` for a
# letter). OpenAI's and Anthropic's project, service and admin keys are told by their second
# word, also glued to a digit (`req1sk-proj-...`), not to a letter (`task-admin-assistant`).
_START = r"(?<![0-9A-Za-z])"
KEY_SHAPES = re.compile(
    rf"{_START}(?:AIza[0-9A-Za-z_-]{{20,}}|(?:AKIA|ASIA)[0-9A-Z]{{16}}(?![0-9A-Za-z])|ya29\.[0-9A-Za-z_.-]+"
    r"|sk-[A-Za-z0-9_-]{8,}|eyJ[0-9A-Za-z_-]+\.[0-9A-Za-z_-]+\.[0-9A-Za-z_-]*"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abpr]-[0-9A-Za-z-]+"
    r"|(?:gsk|hf|r8|fw)_[A-Za-z0-9]{20,}|(?:xai|pplx)-[A-Za-z0-9]{20,}|nvapi-[A-Za-z0-9_-]{20,})"
    r"|(?<![A-Za-z])sk-(?:proj|ant|svcacct|admin)-[A-Za-z0-9_-]{20,}"
)
# A credential after its HTTP scheme: a whole `Authorization` value pasted where it does not go
# (a token of 8 or more: not words, as in `basic model`).
_AUTH_VALUE = re.compile(r"(?i)\b(?:bearer|basic)\s+[^\s]{8}")


def holds_key(text: str) -> bool:
    """Whether `text` holds a key of a well-known shape, also glued to a word by `_`
    (`gpt-4o_sk-...`), or a credential after `Bearer`/`Basic`."""
    return bool(KEY_SHAPES.search(text) or _AUTH_VALUE.search(text))
