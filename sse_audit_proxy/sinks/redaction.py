"""Keeping credentials out of every log line, including rendered exceptions.

The proxy never puts a header value into a log event on purpose; this is the second line
of defence for text it does not control (exception messages from libraries, which can quote
a request line or a header). A structlog processor, run last before rendering.

The upstream's response headers are the exception: evidence shows them (`header()`), so they
get more than the log lines' vocabulary. A header is blanked when its name is a secret's
(the exact names, `--secret-headers`, and names that say key, token, secret, password,
credential, session, cookie); in any other value, credentials are scrubbed where they sit: a
URL's userinfo, `key=`/`token=`/`sig=`-like pairs (query strings, cookies, JSON, AWS's
`Credential=`) and keys of well-known shapes. Names of counts (`x-ratelimit-remaining-tokens`)
are no secret's: evidence needs them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from sse_audit_proxy.core.credentials import KEY_SHAPES, KEY_WORDS

SECRET_HEADERS = (
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "set-cookie",
)
REDACTED = "[redacted]"
# Credentials that look like credentials wherever they appear in free text.
# (Keys of every well-known shape, not OpenAI's alone: an upstream URL with a Google key in its
# path was logged whole by `proxy_started`, an outside review.)
_TOKENS = (
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s'\",;\\]+"), rf"\1\2{REDACTED}"),
    (KEY_SHAPES, REDACTED),  # `req_sk-...` and `prodsk-...` too
)
_TRIGGERS = ("bearer", "basic", *KEY_WORDS)


# Header names whose values are credentials, beyond SECRET_HEADERS: how gateways and clouds
# name their keys and tokens (x-goog-api-key, anthropic-api-key, ocp-apim-subscription-key,
# x-access-token, x-amz-security-token, x-upstream-cookie, x-amzn-remapped-authorization).
# Rate-limit headers name token counts ("...-tokens", "...-tokens-reset"): `token` only at
# the end of a name, so they stay. `session` only as a session's ID, token or key, or alone:
# Azure's `azureml-model-session` names the model deployment that answered, evidence worth
# keeping.
# A name that ends in the word `key` or `keys` (`x-key`, `x-api-keys`), has `apikey` in it
# (`x-apikey-v2`), ends in `auth` (`x-auth`) or in `token-id`: a key, a token or auth. Not a
# key or token word that a count or a limit follows: LiteLLM's `x-litellm-key-spend` and
# `-key-remaining-tokens-<model>`, Bedrock's `x-amzn-bedrock-input-token-count`.
_SECRET_NAME = re.compile(
    r"(?:api|access|private|secret|signing|subscription|functions|master|account|session)[-_]?key$"
    r"|token$|secret|passw(?:or)?d|credential|cookie|session[-_]?(?:id|token)$|^session$"
    r"|sessid$|(?:^|[-_.])sid$|_session$"  # PHPSESSID, connect.sid, laravel_session
    r"|signature|authori[sz]ation|jwt"
    r"|(?:^|[-_.])(?:api[-_]?)?keys?$|apikey|(?:^|[-_.])auth$|(?:^|[-_.])token[-_.]id$"
).search
# A header value that is a credential under an HTTP authentication scheme other than Bearer
# and Basic (which `_TOKENS` blanks wherever they are): the scheme's name, then a token of 16
# or more (`Token 9944b09199c62bcf`), not words (`Token expired`, `Mutual TLS required`).
# (AWS's SigV4 names its parts: `_SECRET_PAIR` blanks Credential= and Signature= alone.)
_AUTH_SCHEME = re.compile(
    r"(?i)^(\s*(?:token|negotiate|ntlm|dpop|gnap|privatetoken|vapid)\s+)[A-Za-z0-9._~+/=-]{16,}"
)
# An OAuth authorization code or ID token in a URL (a relayed redirect's `Location`).
_URL_GRANT = re.compile(r"(?i)([?&#](?:code|id_token|client_assertion)=)[^&#\s\"'<>]*")
# In a header value: `scheme://user:password@`, and a secret-named parameter's value, as a
# query string, a cookie, JSON or AWS's SigV4 header write it (`&api_key=...`, `session=...`,
# `"token": "..."`, `Credential=AKIA.../...`): the name is kept, its value blanked. A value in
# quotes is blanked to its closing quote, any other up to a separator.
# (A scheme of at most 32 characters: unbounded, the search was quadratic on `a-a-a-...`.)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,31}://)[^/?#\s@]*@")
# The secret word starts the name or follows a separator (`x-api-key`, `client_secret`), maybe
# percent-encoded as in a URL (`api%5Fkey=`): looked behind, not matched as a chain of words
# before it (a chain made the search quadratic: 1.7 s on an 8 KiB `a-a-a-...` value). A value
# ends before `>`, where a `Link` field's URL ends.
_SECRET_PAIR = re.compile(
    r"(?i)((?:(?<![a-z0-9])|(?<=[-_.])|(?<=%[0-9a-f]{2}))"
    r"(?:api(?:[-_]|%5f|%2d)?key|apikey|key|token|secret|passw(?:or)?d|pwd|sig|signature|credential|"
    r"session(?:[-_]?id)?|sessid|sid|auth|jwt)['\"]?\s*(?:[:=]|%3d)\s*)"
    r"(?:\"[^\"]*\"|'[^']*'|[^\s\"'&;,}>]+)"
)
# The same in camelCase or PascalCase (`"accessToken":`, `"clientSecret":`, Azure's
# `AccountKey=` and `SharedAccessKey=`): a secret word after a lower-case letter or digit.
# `"maxTokens": 100` stays: the word must end the name.
_CAMEL_PAIR = re.compile(
    r"((?<![A-Za-z0-9])[A-Za-z0-9]*[a-z0-9](?:Token|Key|Secret|Passw(?:or)?d|Pwd|Signature|Credential|Jwt)"
    r"['\"]?\s*[:=]\s*)(?:\"[^\"]*\"|'[^']*'|[^\s\"'&;,}]+)"
)


def _trie(words: list[bytes]) -> bytes:
    """A pattern matching any of `words` (a word that another begins with matches first: any
    match will do), branching one byte at a time."""
    branches: dict[int, list[bytes]] = {}
    for word in words:
        if word:
            branches.setdefault(word[0], []).append(word[1:])
    if not branches:
        return b""
    alternatives = [
        re.escape(bytes([first])) + (b"" if b"" in rest else _trie(rest))
        for first, rest in sorted(branches.items())
    ]
    return b"(?:" + b"|".join(alternatives) + b")"


def secret_names(extra: Iterable[str] = ()) -> frozenset[str]:
    """The built-in secret header names plus `extra`, lower-cased."""
    names = {n.strip().lower() for n in (*SECRET_HEADERS, *extra)}
    return frozenset(n for n in names if n)


class Redactor:
    """structlog processor: blanks secret-named fields and secrets inside any string."""

    def __init__(self, extra_headers: Iterable[str] = ()) -> None:
        names = secret_names(extra_headers)
        self._names = names
        # Field names as they would appear as log keys too: api-key, api_key.
        self._keys = frozenset({*names, *(n.replace("-", "_") for n in names)})
        alternation = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        # `Name: value` / `name=value` / `'name': 'value'` as quoted in messages and reprs.
        self._line = re.compile(rf"(?i)\b({alternation})(['\"]?\s*[:=]\s*['\"]?)[^\r\n'\"]*")
        # Each pattern above needs one of these words; one search for any of them spares the
        # three substitutions on the many strings (every field of every line) that have none.
        triggers = "|".join(map(re.escape, _TRIGGERS))
        self._suspect_any = re.compile(rf"(?i){triggers}|{alternation}").search
        # The same search, for ASCII text, on the text lower-cased: an ASCII letter matches
        # (?i) only its two ASCII cases there (its other equivalents, like U+017F for `s`, are
        # not ASCII), and a case-sensitive alternation of literals is scanned far faster than
        # the case-blind one (re skips to the words' first letters; profiled: most of a line's
        # redaction cost). Only when every name is ASCII too, so lower() is exact for them.
        self._suspect_ascii = (
            re.compile(f"{triggers}|{alternation}").search if all(n.isascii() for n in names) else None
        )
        self._fine_keys: set[str] = set()  # field names seen not to be secret-named
        # The search of a whole rendered line (suspect_line): the same words, and every secret
        # name as a log key may spell it. Only for words JSON writes as they are: without a
        # quote, a backslash or a control character (a configured name could have one).
        words = (*_TRIGGERS, *self._keys)
        self._line_any = re.compile("(?i)" + "|".join(map(re.escape, words))).search
        # For an ASCII line, lower-cased: the words as a trie, one branch per letter (a plain
        # alternation tries every word at each of the line's letters that begin one, and cost
        # more than all the fields' searches together, callgrind; a substring test per word
        # cost 20 µs a line once the key shapes' words joined, the trie 8).
        self._line_words = (
            re.compile(_trie(sorted({w.encode() for w in words}))).search
            if all(w.isascii() for w in words)
            else None
        )
        self._line_whole = not any(c in '"\\' or c < " " for k in self._keys for c in k)

    def is_secret_name(self, header: str) -> bool:
        """A header whose value is never shown: built-in names, --secret-headers, and names
        that say they hold a key, a token, a secret or a session (_SECRET_NAME)."""
        name = header.lower()
        return name in self._names or _SECRET_NAME(name) is not None

    def scrub_name(self, name: str) -> str:
        """A response field's name as evidence shows it: keys of well-known shapes blanked (an
        upstream may name a field with one, `X-Debug-AKIA...`)."""
        return KEY_SHAPES.sub(REDACTED, name)

    def header(self, name: str, value: str) -> str:
        """A response header's value as evidence shows it: blanked when the name is a
        secret's, else with the credentials inside it scrubbed."""
        if self.is_secret_name(name):
            return REDACTED
        value = self.scrub(value)
        value = _AUTH_SCHEME.sub(rf"\1{REDACTED}", value)
        value = _URL_GRANT.sub(rf"\1{REDACTED}", value)
        value = _USERINFO.sub(rf"\1{REDACTED}@", value)
        value = _SECRET_PAIR.sub(rf"\1{REDACTED}", value)
        value = _CAMEL_PAIR.sub(rf"\1{REDACTED}", value)
        return KEY_SHAPES.sub(REDACTED, value)

    def _suspect(self, text: str) -> bool:
        """Whether `text` has a word some substitution needs (else scrub() leaves it as it is)."""
        ascii_search = self._suspect_ascii
        if ascii_search is not None and text.isascii():
            return ascii_search(text.lower()) is not None
        return self._suspect_any(text) is not None

    def suspect_line(self, line: bytes) -> bool:
        """Whether a rendered JSON line has a word this processor looks for, in any key or
        string. JSON writes keys and strings as they are, escaping only quotes, backslashes
        and control characters (in none of the words), so a line without one is a line whose
        event this processor would have left as it was: nothing in it to redact."""
        if not self._line_whole:
            return True
        words = self._line_words
        if words is not None and line.isascii():
            return words(line.lower()) is not None
        return self._line_any(line.decode()) is not None

    def scrub(self, text: str) -> str:
        if not self._suspect(text):
            # A plain str either way, as a substitution returns (a StrEnum renders as its value).
            return text if type(text) is str else str.__str__(text)
        text = self._line.sub(rf"\1\2{REDACTED}", text)
        for pattern, replacement in _TOKENS:
            text = pattern.sub(replacement, text)
        return text

    def _clean(self, value: Any) -> Any:
        kind = type(value)
        if kind in _PLAIN:  # numbers and None: most fields, and nothing to scrub
            return value
        if kind is str or isinstance(value, str):
            return self.scrub(value)
        if kind is dict or isinstance(value, Mapping):  # dict first: the ABC check is slow
            return {k: REDACTED if str(k).lower() in self._keys else self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        keys = self._keys
        fine = self._fine_keys
        suspect = self._suspect
        for key, value in event.items():
            if key not in fine or type(key) is not str:  # (a str subclass may lower() apart)
                if key.lower() in keys:
                    event[key] = REDACTED
                    continue
                self._note_fine(key)
            kind = type(value)
            if kind is str:
                if suspect(value):
                    event[key] = self.scrub(value)
            elif kind not in _PLAIN and not self._untouched(value):
                event[key] = self._clean(value)
        return event

    def _note_fine(self, key: str) -> None:
        # Log keys are the code's own, few: remembered (bounded, as contextvars may add more).
        if type(key) is str and len(self._fine_keys) < _MAX_FINE_KEYS:
            self._fine_keys.add(key)

    def _untouched(self, value: Any) -> bool:
        """Whether _clean would give `value` back as it is (equal, and rendered the same): only
        JSON's own exact types, no secret-named key, no string with a trigger word. What most
        fields of a line are (usage, anomalies, reasons): checked without building a copy."""
        kind = type(value)
        if kind is str:
            return not self._suspect(value)
        if kind in _PLAIN:
            return True
        if kind is list:
            return all(self._untouched(v) for v in value)
        if kind is dict:
            fine = self._fine_keys
            for k, v in value.items():
                if k not in fine or type(k) is not str:
                    if type(k) is not str or k.lower() in self._keys:
                        return False
                    self._note_fine(k)
                if not self._untouched(v):
                    return False
            return True
        return False  # anything else (tuples, mappings, enums, objects): _clean decides


_MAX_FINE_KEYS = 512
_PLAIN = frozenset({int, float, bool, type(None)})
