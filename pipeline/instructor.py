"""The one module that talks to an instructor model (OpenAI API or any compatible
endpoint: GPT-4o, vLLM, llama.cpp's server).

- JSON replies are validated against a schema; an invalid reply gets a repair turn.
- 429, 5xx, timeouts and connection errors are retried with exponential backoff.
- Replies are cached in the store by (endpoint, model, messages, parameters, schema):
  a re-run costs nothing and gives the same result.
- Every call, cached or not, failed or not, is logged in `llm_calls`.
The API key is read from OPENAI_API_KEY only; it is never stored or printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema

from pipeline.store import Store

PROMPTS = Path(__file__).parent / "prompts"


class InstructorError(RuntimeError):
    """The instructor could not give a valid answer; the message says why."""


def load_prompt(name: str) -> tuple[str, dict]:
    """A versioned prompt template and its JSON schema."""
    return (PROMPTS / f"{name}.txt").read_text(), json.loads(
        (PROMPTS / f"{name}.schema.json").read_text())


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


@dataclass
class Instructor:
    model: str
    base_url: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0
    repair_turns: int = 1
    temperature: float = 0.0
    max_tokens: int = 256
    json_mode: bool = True  # response_format=json_object (OpenAI, vLLM, llama.cpp)
    _client: object = field(default=None, repr=False)

    @property
    def name(self) -> str:
        host = self.base_url or "api.openai.com"
        return f"openai:{self.model}@{host}"

    def client(self):
        if self._client is None:
            from openai import OpenAI

            # Our own retry loop logs each attempt; the SDK's is switched off.
            self._client = OpenAI(base_url=self.base_url,
                                  api_key=os.environ.get("OPENAI_API_KEY") or "sk-no-key",
                                  timeout=self.timeout_s, max_retries=0)
        return self._client

    def params(self) -> dict:
        p = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.json_mode:
            p["response_format"] = {"type": "json_object"}
        return p

    def cache_key(self, messages: list[dict], schema: dict) -> str:
        blob = json.dumps([self.base_url, self.model, messages, self.params(), schema],
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _call(self, store: Store, messages: list[dict], purpose: str, key: str) -> str:
        """One chat completion with retries; every attempt is logged."""
        import openai

        retryable = (openai.RateLimitError, openai.InternalServerError,
                     openai.APIConnectionError, openai.APITimeoutError)
        last = None
        for attempt in range(self.max_retries + 1):
            t0 = time.perf_counter()
            try:
                r = self.client().chat.completions.create(model=self.model, messages=messages,
                                                          **self.params())
            except retryable as e:
                last = e
                store.log_llm_call(key, self.model, self.base_url, purpose, messages,
                                   self.params(), None, None, None, None,
                                   time.perf_counter() - t0, f"{type(e).__name__}: {e}")
                if attempt < self.max_retries:
                    time.sleep(self.backoff_s * 2 ** attempt)
                continue
            except openai.APIError as e:  # 4xx other than 429: not worth retrying
                store.log_llm_call(key, self.model, self.base_url, purpose, messages,
                                   self.params(), None, None, None, None,
                                   time.perf_counter() - t0, f"{type(e).__name__}: {e}")
                raise InstructorError(f"{self.name}: {type(e).__name__}: {e}") from e
            text = r.choices[0].message.content or ""
            u = r.usage
            store.log_llm_call(key, self.model, self.base_url, purpose, messages, self.params(),
                               text, None, u.prompt_tokens if u else None,
                               u.completion_tokens if u else None, time.perf_counter() - t0, None)
            return text
        raise InstructorError(f"{self.name}: gave up after {self.max_retries + 1} attempts: "
                              f"{type(last).__name__}: {last}")

    def ask_json(self, store: Store, prompt: str, schema: dict, purpose: str) -> dict:
        """Ask for a JSON object that validates against `schema` (cached)."""
        messages = [{"role": "user", "content": prompt}]
        key = self.cache_key(messages, schema)
        hit = store.llm_cache_get(key)
        if hit is not None:
            store.log_llm_call(key, self.model, self.base_url, purpose, messages, self.params(),
                               hit["reply"], hit["parsed"], None, None, 0.0, None, cached=True)
            return hit["parsed"]
        convo = list(messages)
        for turn in range(self.repair_turns + 1):
            text = self._call(store, convo, purpose, key)
            try:
                parsed = parse_json(text)
                jsonschema.validate(parsed, schema)
            except (json.JSONDecodeError, jsonschema.ValidationError) as e:
                problem = e.msg if isinstance(e, json.JSONDecodeError) else e.message
                store.log_llm_call(key, self.model, self.base_url, purpose, convo, self.params(),
                                   text, None, None, None, None, f"invalid reply: {problem}")
                if turn == self.repair_turns:
                    snippet = text.strip().replace("\n", " ")[:120]
                    raise InstructorError(f"{self.name}: reply is not valid JSON for the schema "
                                          f"({problem}): {snippet!r}") from e
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
        """None if the endpoint answers a model listing, else the reason."""
        try:
            self.client().with_options(timeout=5.0).models.list()
            return None
        except Exception as e:
            return f"{type(e).__name__}: {e}"


def from_env() -> Instructor | None:
    """The configured instructor, or None (then the offline analyzer is the default).
    SEI_INSTRUCTOR_MODEL names the model; OPENAI_BASE_URL the endpoint (either falls
    back to the app's saved settings); with only
    OPENAI_API_KEY set, GPT-4o on the OpenAI API."""
    from pipeline import settings

    saved = settings.load()
    model = os.environ.get("SEI_INSTRUCTOR_MODEL") or saved.instructor_model or None
    base = os.environ.get("OPENAI_BASE_URL") or saved.instructor_base_url or None
    if not model and os.environ.get("OPENAI_API_KEY"):
        model = "gpt-4o"
    if not model:
        return None
    return Instructor(model=model, base_url=base)
