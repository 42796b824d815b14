"""The upstream's response headers as evidence shows them (Redactor.header).

The redactor knew six header names and two credential shapes: `X-Goog-Api-Key`,
`Anthropic-Api-Key`, `X-Access-Token`, a URL's `user:password@`, `?key=` in a `Location`,
`{"api_key": ...}` in a value and AWS's `Credential=` were shown as they were. Rate-limit
headers name token counts and must stay as they are: they are what evidence is for.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_audit_proxy.sinks.redaction import REDACTED, Redactor

SECRET_NAMED = [
    "X-Goog-Api-Key",
    "Anthropic-Api-Key",
    "x-portkey-api-key",
    "Ocp-Apim-Subscription-Key",
    "x-functions-key",
    "X-Access-Token",
    "X-Auth-Token",
    "x-amz-security-token",
    "X-Session-Id",
    "X-Session-Token",
    "Session",
    "X-Upstream-Cookie",
    "X-Client-Secret",
    "X-Db-Password",
    "X-Credential",
    "X-Amzn-Remapped-Authorization",
    "X-Goog-Iap-Jwt-Assertion",
    "Authorization",
    "Set-Cookie",
    # a key, a token or auth as a word of the name, wherever it sits (outside review)
    "X-Api-Keys",
    "X-Apikey-V2",
    "X-Key",
    "X-Token-Id",
    "X-Auth",
    "X-Debug-Auth",
]
KEPT = {
    "x-ratelimit-limit-tokens": "30000",
    "x-ratelimit-remaining-tokens": "29000",
    "x-ratelimit-reset-tokens": "6ms",
    "x-ratelimit-limit-requests": "500",
    "anthropic-ratelimit-input-tokens-limit": "400000",
    "anthropic-ratelimit-output-tokens-remaining": "80000",
    "anthropic-ratelimit-tokens-reset": "2026-01-01T00:00:00Z",
    "openai-processing-ms": "123",
    "openai-organization": "org-abc",
    "x-request-id": "req_abc123",
    "request-id": "req_011CXYZ",
    "retry-after": "2",
    "content-type": "text/event-stream; charset=utf-8",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "cache-control": "no-cache, must-revalidate",
    "link": "<https://example.com/docs?page=2>; rel=next",
    "server-timing": "upstream;dur=12.5, auth;dur=1",
    # Azure OpenAI: the model deployment that answered, not a session credential.
    "azureml-model-session": "d106-20240613214326",
    "x-debug": '{"maxTokens": 100, "completionTokens": 5, "inputTokenCount": 7}',
    # a key or token word that a count, a spend or a limit follows (second review)
    "x-litellm-key-spend": "0.0012",
    "x-litellm-key-remaining-tokens-gpt-4o": "99000",
    "x-litellm-key-max-budget": "10.0",
    "x-amzn-bedrock-input-token-count": "12",
    "x-amzn-bedrock-cache-read-input-token-count": "0",
    "x-ratelimit-token-limit": "1000",
    # an auth scheme's name followed by words, not a credential
    "x-error": "Token expired at 2026-01-01T00:00:00Z",
    "x-reason": "Mutual TLS required",
    "www-authenticate": 'Digest realm="api", qop="auth", nonce="dcd98b7102dd2f0e"',
}


@pytest.mark.parametrize("name", SECRET_NAMED)
def test_a_secret_named_header_is_blanked(name: str) -> None:
    assert Redactor().header(name, "v4lue-0f-a-secret") == REDACTED


def test_rate_limits_and_timings_are_shown_as_they_are() -> None:
    redactor = Redactor()
    assert {k: redactor.header(k, v) for k, v in KEPT.items()} == KEPT


@pytest.mark.parametrize(
    ("value", "secrets", "kept"),
    [
        (
            "https://admin:hunter2pass@internal.example/p?key=AIzaSyQUERYKEY99999&api_key=QSECRET2&page=2",
            ["admin", "hunter2pass", "AIzaSyQUERYKEY99999", "QSECRET2"],
            ["internal.example/p?key=", "&page=2"],
        ),
        (
            '{"api_key": "JSONSECRET123", "token": "JSON TOKEN 456", "n": 3}',
            ["JSONSECRET123", "TOKEN"],
            ['"n": 3'],
        ),
        ("a=1; session=SESSIONVALUE77; sid=S1D2; b=2", ["SESSIONVALUE77", "S1D2"], ["a=1", "b=2"]),
        (
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEAKID/2024/us-east-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=ABCDEF0123",
            ["AKIAEXAMPLEAKID", "ABCDEF0123"],
            ["SignedHeaders=host"],
        ),
        (
            "https://blob.example/c?sv=2024&sig=SASSIGNATURE%2Bx&se=2026",
            ["SASSIGNATURE"],
            ["sv=2024", "se=2026"],
        ),
        # an authentication scheme other than Bearer and Basic: all of its credentials
        ("Token 9944b09199c62bcf9418ad846dd0e4bb", ["9944b09199c62bcf"], ["Token "]),
        ("NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw==", ["TlRMTVNTUAAB"], ["NTLM "]),
        # an encoded `=` after a secret's name (a URL inside a parameter)
        ("https://x/?next=%2Fx%3Fapi_key%3DENCODEDEQ1&p=2", ["ENCODEDEQ1"], ["&p=2"]),
        # a one-word name right after an escape (`%3F`, `%26`): the escape's hex is no letter
        ("https://x/?next=%2Fcb%3Ftoken%3DENCODEDEQ2&a=1", ["ENCODEDEQ2"], ["&a=1"]),
        ("https://b/c?x=1%26sig%3DENCODEDEQ3", ["ENCODEDEQ3"], ["x=1"]),
        # an OAuth code in a relayed redirect; a name percent-encoded in a URL
        ("https://app.example/cb?code=OAUTHCODE77&state=abc", ["OAUTHCODE77"], ["?code=", "&state=abc"]),
        ("https://example.com/?api%5Fkey=ENCODEDKEY1&page=2", ["ENCODEDKEY1"], ["&page=2"]),
        # a URL in a Link field keeps its closing bracket
        ("<https://x/?access_token=L1NKTOKEN>; rel=next", ["L1NKTOKEN"], [">; rel=next"]),
        (
            "seen AIzaSyEXAMPLEKEY0123456789abcdef and AKIAIOSFODNN7EXAMPLE and "
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl and ya29.a0AfH6SM",
            ["AIzaSyEXAMPLEKEY", "AKIAIOSFODNN7EXAMPLE", "eyJhbGciOiJIUzI1NiJ9", "a0AfH6SM"],
            ["seen", " and "],
        ),
    ],
)
def test_credentials_inside_a_value_are_scrubbed_in_place(
    value: str, secrets: list[str], kept: list[str]
) -> None:
    shown = Redactor().header("X-Debug", value)
    assert [s for s in secrets if s in shown] == [], shown
    assert [k for k in kept if k not in shown] == [], shown


_SECRET = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=8, max_size=16)
_PARAM = st.sampled_from(
    [
        "key",
        "api_key",
        "apikey",
        "access_token",
        "token",
        "client_secret",
        "password",
        "sig",
        "X-Amz-Credential",
    ]
)
_FORM = st.sampled_from(["{n}={s}", "{n}={s}&x=1", '"{n}": "{s}"', "'{n}':'{s}'", "{n} = {s}", "{n}={s}; y"])
_AROUND = st.text(alphabet="abc xyz=&;,/?:", max_size=10)


@settings(max_examples=300, deadline=None)
@given(_AROUND, _PARAM, _FORM, _SECRET, _AROUND)
def test_a_secret_named_parameter_never_shows_its_value(
    before: str, name: str, form: str, secret: str, after: str
) -> None:
    value = before + " " + form.format(n=name, s=secret) + " " + after
    assert secret not in Redactor().header("X-Anything", value)


@pytest.mark.parametrize(
    "value",
    [
        '{"accessToken":"T0PSECRET"}',
        '{"sessionToken": "T0PSECRET"}',
        '{"secretAccessKey":"T0PSECRET"}',
        '{"clientSecret":"T0PSECRET"}',
        '{"refreshToken":"T0PSECRET"}',
        '{"apiToken":"T0PSECRET"}',
        "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=T0PSECRET;EndpointSuffix=x",
        "Endpoint=sb://x/;SharedAccessKeyName=n;SharedAccessKey=T0PSECRET",
    ],
)
def test_camel_and_pascal_case_credential_pairs_are_scrubbed(value: str) -> None:
    """JSON written by JavaScript and Azure connection strings name their secrets in camel or
    Pascal case; the pairs' other spellings (access_token, x-api-key) were already scrubbed."""
    shown = Redactor().header("x-debug", value)
    assert "T0PSECRET" not in shown and REDACTED in shown


@pytest.mark.parametrize(
    "value",
    ["a-" * 4096, "a_" * 4096, "a." * 4090 + "key", "token-" * 1365, "eyJa." * 1638, "a%5f" * 2048],
)
def test_a_hostile_8_kib_value_is_redacted_in_linear_time(value: str) -> None:
    """A chain of words before the secret word, and an unbounded URL scheme, made two of the
    searches quadratic: 1.7 s of the event loop for one 8 KiB header value of `a-a-a-...`
    (now a few ms; the bound here is two orders above that, and far under the old cost)."""
    redactor = Redactor()
    started = time.process_time()
    for _ in range(3):
        redactor.header("X-Debug", value)
    assert time.process_time() - started < 0.5
