"""Secrets never reach the store, logs or pages: every error text goes through scrub().

It removes the value of OPENAI_API_KEY (and of any other variable named like a secret),
bearer tokens, OpenAI-style keys, and user:password in URLs. Store methods that write
error or reply text call it, so do the instructor client, the job runner's log and the CLI.
"""

from __future__ import annotations

import os
import re

MASK = "***"
# Variables whose values are secrets wherever they appear.
_SECRET_VARS = re.compile(r"(?:^|_)(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD)$", re.I)
_MIN_LEN = 6  # shorter values would mask ordinary words

_URL_CREDS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+:[^/\s@]*@")
# A token after "Bearer"/"Basic": at least 6 token characters that hold a digit, or 20 and
# more ("Basic arithmetic" and "bearer tokens" are ordinary words, not credentials).
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+"
                     r"(?:(?=[A-Za-z._~+/=-]*\d)[A-Za-z0-9._~+/=-]{6,}|[A-Za-z0-9._~+/=-]{20,})")
_SK = re.compile(r"\bsk-[A-Za-z0-9_-]{12,}")
_AUTH_HEADER = re.compile(r"(?i)(['\"]?(?:authorization|api-key|x-api-key)['\"]?\s*[:=]\s*['\"]?)"
                          r"[^'\"\s,}]+(?:\s+[^'\"\s,}]+)?")


def _secret_values() -> list[str]:
    vals = {v for k, v in os.environ.items()
            if _SECRET_VARS.search(k) and v and len(v) >= _MIN_LEN}
    return sorted(vals, key=len, reverse=True)  # longest first: no partial leftovers


def scrub(text):
    """The text without secrets (None and non-strings pass through unchanged)."""
    if not isinstance(text, str) or not text:
        return text
    for v in _secret_values():
        text = text.replace(v, MASK)
    text = _URL_CREDS.sub(lambda m: m.group("scheme") + MASK + "@", text)
    text = _BEARER.sub(lambda m: m.group(1) + " " + MASK, text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + MASK, text)
    return _SK.sub("sk-" + MASK, text)


def has_credentials(url: str | None) -> bool:
    """Whether a URL carries user:password."""
    return bool(url and _URL_CREDS.search(url))


class ScrubFilter:
    """A logging filter that scrubs every record a handler writes (libraries log URLs)."""

    def filter(self, record) -> bool:
        """Scrub secrets from a log record's message and traceback; keeps it."""
        record.msg, record.args = scrub(record.getMessage()), None
        if record.exc_info:
            import traceback

            record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True
