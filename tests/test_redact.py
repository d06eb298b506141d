"""Unit cases for pipeline/core/redact.py: every kind of secret it names is masked where it
appears (plain text, URLs, headers, JSON error bodies, log records), and ordinary text,
numbers and URLs without credentials come through unchanged."""

from __future__ import annotations

import json
import logging

import pytest

from pipeline.core.redact import MASK, ScrubFilter, has_credentials, scrub

KEY = "sk-proj-AbCdEf0123456789_xyzXYZ"


@pytest.fixture(autouse=True)
def _no_secret_env(monkeypatch):
    for var in ("OPENAI_API_KEY", "SEI_TEST_TOKEN", "MY_PASSWORD", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("text,secret,expected", [
    (f"Incorrect API key provided: {KEY}.", KEY, f"Incorrect API key provided: sk-{MASK}."),
    ("Authorization: Bearer abc.DEF-123_456~xyz", "abc.DEF-123_456~xyz",
     f"Authorization: {MASK}"),
    ("sent bearer eyJhbGciOiJIUzI1NiJ9.payload.sig then failed",
     "eyJhbGciOiJIUzI1NiJ9.payload.sig", f"sent bearer {MASK} then failed"),
    ("Bearer abcdefghijklmnopqrstuvwxyz rejected", "abcdefghijklmnopqrstuvwxyz",
     f"Bearer {MASK} rejected"),
    ("Basic dXNlcjpwYXNzd29yZA== rejected", "dXNlcjpwYXNzd29yZA==", f"Basic {MASK} rejected"),
    ("GET https://alice:s3cr3t-pw@api.example.com/v1/models failed",
     "s3cr3t-pw", f"GET https://{MASK}@api.example.com/v1/models failed"),
    ("redis://user:p%40ss@127.0.0.1:6379/0", "p%40ss", f"redis://{MASK}@127.0.0.1:6379/0"),
    ("headers={'api-key': 'abcdef123456', 'accept': 'json'}", "abcdef123456",
     f"headers={{'api-key': '{MASK}', 'accept': 'json'}}"),
    ("x-api-key=abcdef123456, more", "abcdef123456", f"x-api-key={MASK}, more"),
])
def test_each_kind_of_secret_is_masked(text, secret, expected):
    out = scrub(text)
    assert secret not in out
    assert out == expected


def test_a_key_inside_a_json_error_body_is_masked_and_the_body_stays_json():
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}. You can "
                                            "find your API key at https://platform.openai.com.",
                                 "type": "invalid_request_error", "code": "invalid_api_key"},
                       "request": {"headers": {"Authorization": f"Bearer {KEY}"}}})
    out = scrub(f"HTTP 401 from https://api.openai.com/v1/chat/completions: {body}")
    assert KEY not in out and KEY[3:] not in out
    parsed = json.loads(out.split(": ", 1)[1])
    assert parsed["error"]["message"].startswith(f"Incorrect API key provided: sk-{MASK}.")
    assert parsed["error"]["code"] == "invalid_api_key"  # the rest of the body intact
    assert parsed["request"]["headers"]["Authorization"] == MASK


def test_the_values_of_secret_named_variables_are_masked_anywhere(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "plainvalue-without-prefix")
    monkeypatch.setenv("MY_PASSWORD", "hunter2hunter2")
    monkeypatch.setenv("SEI_TEST_TOKEN", "tok")  # too short to mask: would hit words
    out = scrub("key=plainvalue-without-prefix; pw hunter2hunter2; tok tok tokens")
    assert out == f"key={MASK}; pw {MASK}; tok tok tokens"


@pytest.mark.parametrize("text", [
    "The answer is 42. Bearer of bad news: a skeleton key.",
    "Task-oriented sk- prefix alone, sk-short, and risk-averse ask-for-help",
    "See https://example.com/path?q=1 and http://127.0.0.1:8080/v1 (no credentials)",
    "user@example.com wrote: 3:45 @ 12:00",
    "Basic arithmetic: 12 + 30 = 42; key points: none",
    "the bearer tokens expired; basic operations first",
    "",
])
def test_ordinary_text_is_left_alone(text):
    assert scrub(text) == text


def test_non_strings_pass_through():
    assert scrub(None) is None
    assert scrub(42) == 42


def test_has_credentials():
    assert has_credentials("https://u:p@host/v1")
    assert not has_credentials("https://host/v1")
    assert not has_credentials("mailto:user@example.com")
    assert not has_credentials(None)


def test_scrub_filter_masks_a_log_record_and_its_traceback():
    rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "calling %s with %s", None, None)
    rec.args = ("https://bob:pw123456@h/v1", f"Bearer {KEY}")
    try:
        raise RuntimeError(f"bad key {KEY}")
    except RuntimeError:
        import sys

        rec.exc_info = sys.exc_info()
    assert ScrubFilter().filter(rec) is True
    assert rec.msg == f"calling https://{MASK}@h/v1 with Bearer {MASK}" and rec.args is None
    assert KEY not in rec.exc_text and f"bad key sk-{MASK}" in rec.exc_text
