"""The one module that talks to an instructor model (OpenAI API or any compatible
endpoint: GPT-4o, vLLM, llama.cpp's server).

- JSON replies are validated against a schema; an invalid reply gets a repair turn.
- Any exception from a call or from reading its reply (429, 5xx, timeouts, connection
  errors, a reply without choices, a cut body) is a failed attempt: logged, then retried
  with exponential backoff; a 4xx other than 408/409/429 is not retried. A request has a
  timeout (`timeout_s`), a bad case a time limit for all its attempts (`case_time_s`), and
  keyphrases.analyze_bad_cases stops after `breaker_after` consecutive failed cases.
- Replies are cached in the store by (endpoint, model, messages, parameters, schema):
  a re-run costs nothing and gives the same result.
- Every call, cached or not, failed or not, is logged in `llm_calls`.
The API key is read from OPENAI_API_KEY only; it is never stored or printed, and every
error text is scrubbed of it (and of user:password in URLs) before it is logged or raised.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field

import jsonschema

from pipeline.core import prompts
from pipeline.core.redact import scrub
from pipeline.storage.store import Store


class InstructorError(RuntimeError):
    """The instructor could not give a valid answer; the message says why."""

    says_how_to_retry = False  # True where the message itself says how (an analysis's)


def failure_line(e: InstructorError, command: str | None = None) -> str:
    """An instructor's failure as one line for a person: the reason (scrubbed, its
    newlines folded, cut at 1,500 characters) and how to retry: run `command` again
    (a command's own path, e.g. `sei cluster`), unless the message already says how."""
    reason = " ".join(scrub(str(e)).split()) or type(e).__name__
    if len(reason) > 1500:
        reason = reason[:1500] + " ..."
    if e.says_how_to_retry:
        return reason
    again = f"run `{command}` again" if command else "run the command again"
    return (f"the instructor failed: {reason}; {again} to retry (the replies it already "
            "gave are cached and cost nothing)")


def load_prompt(name: str) -> tuple[str, dict]:
    """A versioned prompt template and its JSON schema."""
    return prompts.text(name), prompts.schema(name)


def parse_json(text: str) -> dict:
    """The JSON object in a reply, tolerating code fences and chatter around it."""
    t = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", t, re.S)
    if fence:
        t = fence.group(1).strip()
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        pass
    start = t.find("{")
    end = t.rfind("}")
    if start >= 0 and end > start:
        return json.loads(t[start:end + 1])
    raise json.JSONDecodeError("no JSON object in reply", t, 0)


def _env_float(name: str, default: float) -> float:
    v = os.environ.get(name)
    try:
        return float(v) if v else default
    except ValueError:
        raise InstructorError(f"{name}={v!r} is not a number of seconds") from None


class BadReply(RuntimeError):
    """A reply that is not a usable chat completion (no choices, no content ...)."""


def reply_text(r) -> str:
    """The content of a chat completion, or BadReply saying what is missing."""
    choices = getattr(r, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise BadReply(f"reply has no choices ({type(r).__name__}: {str(r)[:120]!r})")
    msg = getattr(choices[0], "message", None)
    content = getattr(msg, "content", None)
    if not isinstance(content, str):
        raise BadReply("reply has no message content "
                       f"(finish_reason={getattr(choices[0], 'finish_reason', None)!r})")
    return content


def _retryable(e: Exception) -> bool:
    """Every failure is retried except a 4xx other than 408/409/429 (a wrong key, model
    or request will not heal by asking again)."""
    import openai

    if isinstance(e, openai.APIStatusError):
        return not (400 <= e.status_code < 500) or e.status_code in (408, 409, 429)
    return True


@dataclass
class Instructor:
    model: str
    base_url: str | None = None
    # seconds per request (env SEI_INSTRUCTOR_TIMEOUT_S)
    timeout_s: float = field(default_factory=lambda: _env_float("SEI_INSTRUCTOR_TIMEOUT_S", 60))
    # seconds per bad case, all attempts, backoffs and repair turns (SEI_INSTRUCTOR_CASE_S)
    case_time_s: float = field(default_factory=lambda: _env_float("SEI_INSTRUCTOR_CASE_S", 300))
    max_retries: int = 4
    backoff_s: float = 1.0
    repair_turns: int = 1
    temperature: float = 0.0
    max_tokens: int = 256
    json_mode: bool = True  # response_format=json_object (OpenAI, vLLM, llama.cpp)
    breaker_after: int = 5  # consecutive failed cases that stop an analysis
    _client: object = field(default=None, repr=False)

    def __post_init__(self):
        # The same endpoint the OpenAI client itself would fall back to, so that names,
        # cache keys and logs say where the calls really go.
        self.base_url = self.base_url or os.environ.get("OPENAI_BASE_URL") or None

    @property
    def name(self) -> str:
        """The model and endpoint as recorded (no credentials in it)."""
        host = self.base_url or "api.openai.com"
        return scrub(f"openai:{self.model}@{host}")

    def client(self):
        """The OpenAI client, made once (the SDK's own retries off: ours log each)."""
        if self._client is None:
            from openai import OpenAI

            # Our own retry loop logs each attempt; the SDK's is switched off.
            self._client = OpenAI(base_url=self.base_url,
                                  api_key=os.environ.get("OPENAI_API_KEY") or "sk-no-key",
                                  timeout=self.timeout_s, max_retries=0)
        return self._client

    def params(self) -> dict:
        """Sampling parameters sent with each request."""
        p = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.json_mode:
            p["response_format"] = {"type": "json_object"}
        return p

    def cache_key(self, messages: list[dict], schema: dict) -> str:
        """The key of a request in the reply cache: endpoint, model, messages,
        parameters and schema."""
        blob = json.dumps([self.base_url, self.model, messages, self.params(), schema],
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _log(self, store: Store, key: str, purpose: str, messages: list[dict], t0: float | None,
             reply=None, parsed=None, usage=None, error: str | None = None) -> None:
        store.log_llm_call(key, self.model, self.base_url, purpose, messages, self.params(),
                           reply, parsed, getattr(usage, "prompt_tokens", None),
                           getattr(usage, "completion_tokens", None),
                           None if t0 is None else time.perf_counter() - t0, error)

    def _call(self, store: Store, messages: list[dict], purpose: str, key: str,
              deadline: float) -> str:
        """One chat completion with retries. Any exception from the call or from reading
        its reply is a failed attempt: logged (scrubbed), then retried per policy."""
        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise InstructorError(f"{self.name}: time limit per case ({self.case_time_s:g}s)"
                                      f" reached after {attempt} attempt(s); last: {last}")
            t0 = time.perf_counter()
            try:
                r = self.client().with_options(timeout=min(self.timeout_s, left)) \
                    .chat.completions.create(model=self.model, messages=messages,
                                             **self.params())
                text = reply_text(r)
            except Exception as e:
                last = scrub(f"{type(e).__name__}: {e}")[:2000]
                self._log(store, key, purpose, messages, t0, error=last)
                if not _retryable(e):
                    raise InstructorError(f"{self.name}: {last}") from None
                if attempt < self.max_retries:
                    time.sleep(max(0.0, min(self.backoff_s * 2 ** attempt,
                                            deadline - time.monotonic())))
                continue
            self._log(store, key, purpose, messages, t0, reply=text,
                      usage=getattr(r, "usage", None))
            return text
        raise InstructorError(f"{self.name}: gave up after {self.max_retries + 1} attempts: "
                              f"{last}")

    def ask_json(self, store: Store, prompt: str, schema: dict, purpose: str) -> dict:
        """Ask for a JSON object that validates against `schema` (cached), within
        `case_time_s` for all attempts and repair turns together."""
        deadline = time.monotonic() + self.case_time_s
        messages = [{"role": "user", "content": prompt}]
        key = self.cache_key(messages, schema)
        hit = store.llm_cache_get(key)
        if hit is not None:
            store.log_llm_call(key, self.model, self.base_url, purpose, messages, self.params(),
                               hit["reply"], hit["parsed"], None, None, 0.0, None, cached=True)
            return hit["parsed"]
        convo = list(messages)
        for turn in range(self.repair_turns + 1):
            text = self._call(store, convo, purpose, key, deadline)
            try:
                parsed = parse_json(text)
                jsonschema.validate(parsed, schema)
            except Exception as e:  # cut, deep, wrong-shaped or schema-less: all invalid
                problem = scrub(e.msg if isinstance(e, json.JSONDecodeError) else
                                e.message if isinstance(e, jsonschema.ValidationError) else
                                f"{type(e).__name__}: {e}")[:500]
                self._log(store, key, purpose, convo, None, reply=text,
                          error=f"invalid reply: {problem}")
                if turn == self.repair_turns:
                    snippet = scrub(text.strip().replace("\n", " ")[:120])
                    raise InstructorError(f"{self.name}: reply is not valid JSON for the schema "
                                          f"({problem}): {snippet!r}") from None
                convo = convo + [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": "That reply was not valid: "
                     f"{problem}. Reply again with only the JSON object, following this "
                     f"JSON schema: {json.dumps(schema)}"}]
                continue
            store.llm_cache_put(key, self.model, text, parsed)
            return parsed
        raise AssertionError("unreachable")

    def ping(self) -> str | None:
        """None if the endpoint answers a model listing, else the reason (scrubbed)."""
        try:
            self.client().with_options(timeout=5.0).models.list()
            return None
        except Exception as e:
            return scrub(f"{type(e).__name__}: {e}")


def from_env() -> Instructor | None:
    """The configured instructor, or None (then the offline analyzer is the default).
    SEI_INSTRUCTOR_MODEL names the model; OPENAI_BASE_URL the endpoint (either falls
    back to the app's saved settings); with only
    OPENAI_API_KEY set, GPT-4o on the OpenAI API."""
    from pipeline.models import settings

    saved = settings.load()
    model = os.environ.get("SEI_INSTRUCTOR_MODEL") or saved.instructor_model or None
    base = os.environ.get("OPENAI_BASE_URL") or saved.instructor_base_url or None
    if not model and os.environ.get("OPENAI_API_KEY"):
        model = "gpt-4o"
    if not model:
        return None
    return Instructor(model=model, base_url=base)
