"""The scripted target: a stand-in for the target model in the tests whose subject is the
plumbing around it (jobs, the CLI, cancel and kill, the loop's orchestration, served
adapters), where the model's answers do not matter. It lives with the tests, never in
the product: `pipeline.models.target.make_target` builds it instead of the local model only
while the environment names this file in SEI_TEST_TARGET, and every run it makes says
so in its manifest (model id `scripted-test-target`, weights hash `scripted:...`).

Deterministic and instant: a problem is answered right when a hash of its question falls
under SCRIPTED_RIGHT (default 0.5), wrong otherwise, whatever the batch, the order or the
process. An adapter answers right a further share (SCRIPTED_ADAPTER_GAIN, default 0.15)
chosen by a hash of the question and the adapter's weights, so that two adapters differ.
A one-shot demonstration before the question flips 30% of the answers (which ones
depends on the demonstration), so one-shot candidates score apart. Wrong answers
imitate three kinds of error (a step left out, a slip in the last step, a
number copied from the question), so that analysis and clustering have something to
group. SCRIPTED_DELAY_S (default 0) sleeps that long per row, reporting each row as it
finishes: kill and cancel tests get a window they can rely on.

The reference answers come from the store the process works on (SEI_DB): a question the
store does not hold is answered wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core import config
from pipeline.models.target import HISTORIC_RUNTIME, Generation, weights_hash
from pipeline.storage.store import Store

MODEL_ID = "scripted-test-target"
DEMO_FLIPS = 0.3
_STEP = re.compile(r"<<([^=<>]+)=([^<>]+)>>")


def _unit(*parts: str) -> float:
    """A number in [0, 1) from the parts' hash: the same in every process."""
    h = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def _bump(answer: str) -> str:
    """A wrong answer near the reference: one more (numbers), or something else."""
    try:
        x = float(answer.replace(",", ""))
    except ValueError:
        return f"{answer} + 1"
    y = x + 1
    return str(int(y)) if y == int(y) else f"{y:g}"


@dataclass
class ScriptedTarget:
    model: str = config.DEFAULT_MODEL
    adapter: str | None = None
    backend: str = "local"
    model_id: str = MODEL_ID
    weights_hash: str = ""
    right: float = field(default_factory=lambda: float(os.environ.get("SCRIPTED_RIGHT", 0.5)))
    gain: float = field(
        default_factory=lambda: float(os.environ.get("SCRIPTED_ADAPTER_GAIN", 0.15)))
    delay_s: float = field(
        default_factory=lambda: float(os.environ.get("SCRIPTED_DELAY_S", 0)))
    _refs: dict = field(default_factory=dict, repr=False)
    _rows: int = 0

    # -- what a target offers ----------------------------------------------------------

    def runtime(self) -> dict:
        return dict(HISTORIC_RUNTIME)

    def identity(self) -> tuple[str, str]:
        whash = f"scripted:{self.right:g}:{self.gain:g}"
        if self.adapter:
            whash += "+" + weights_hash(self.adapter)[:8]
        return MODEL_ID, whash

    def load(self) -> ScriptedTarget:
        if self.adapter and not (Path(self.adapter) / "adapter_config.json").exists():
            from pipeline.models.target import ModelError

            raise ModelError(f"adapter {self.adapter} has no adapter_config.json")
        self.model_id, self.weights_hash = self.identity()
        return self

    def throughput(self) -> str:
        return f"{self._rows} rows (scripted)"

    def require_logliks(self) -> None:
        """Log-probabilities are always given (made up, deterministically)."""

    def generate(self, messages: list[list[dict]], params, on_rows=None,
                 on_done=None) -> list[Generation]:
        out = []
        for i, conv in enumerate(messages):
            if self.delay_s:
                time.sleep(self.delay_s)
            text = self.answer(_last_user(conv), _demonstration(conv))
            out.append(Generation(text=text, prompt_tokens=sum(len(m["content"].split())
                                                              for m in conv),
                                  completion_tokens=len(text.split()),
                                  latency_s=self.delay_s))
            self._rows += 1
            if os.environ.get("SCRIPTED_LOG"):  # who was asked what, for tests that count
                with open(os.environ["SCRIPTED_LOG"], "a") as f:
                    f.write(json.dumps({"demo": _demonstration(conv),
                                        "question": _last_user(conv)}) + "\n")
            if on_done:
                on_done(i, out[-1])
            if on_rows:
                on_rows(i + 1)
        return out

    def answer_logliks(self, convs: list[list[dict]], answers: list[str]) -> list[float]:
        return [-0.1 - 3 * _unit("loglik", _demonstration(c), _last_user(c), a,
                                 self.adapter or "") for c, a in zip(convs, answers)]

    # -- the script --------------------------------------------------------------------

    def is_right(self, question: str, demo: str = "") -> bool:
        right = _unit("right", question) < self.right or (
            bool(self.adapter) and _unit("adapter", question, self.identity()[1]) < self.gain)
        # a one-shot demonstration flips 30% of the answers, different ones for each
        # demonstration: one-shot candidates fix and break problems, and score apart
        return right != (bool(demo) and _unit("demo", demo, question) < DEMO_FLIPS)

    def answer(self, prompt: str, demo: str = "") -> str:
        ref = self._reference(prompt)
        if ref is None:
            return "I am not sure. The answer is 0."
        question, answer, solution = ref
        steps = [(e.strip(), v.strip()) for e, v in _STEP.findall(solution or "")]
        lines = [f"Step {k + 1}: {e} = {v}." for k, (e, v) in enumerate(steps)]
        if self.is_right(question, demo):
            return "\n".join(lines + [f"The answer is {answer}."])
        kind = int(_unit("kind", question) * 3)
        if kind == 0 and len(steps) >= 2:  # a step left out: stops one step early
            return "\n".join(lines[:-1] + [f"The answer is {steps[-2][1]}."])
        if kind == 1 and steps:  # a slip in the last step
            e, v = steps[-1]
            return "\n".join(lines[:-1] + [f"Step {len(steps)}: {e} = {_bump(v)}.",
                                           f"The answer is {_bump(v)}."])
        numbers = [n for n in re.findall(r"\d+(?:\.\d+)?", question) if n != answer]
        if kind == 2 and numbers:  # a number copied from the question
            return f"The question says {numbers[-1]}.\nThe answer is {numbers[-1]}."
        return "\n".join(lines + [f"The answer is {_bump(answer)}."])

    def _reference(self, prompt: str) -> tuple[str, str, str] | None:
        """(question, answer, solution) of the stored problem whose question the prompt
        asks last; the store is read again when a question is new to this target."""
        for attempt in (0, 1):
            if attempt or not self._refs:
                self._refs = _references()
            best = None
            for q, ref in self._refs.items():
                at = prompt.rfind(q)
                # the question asked last; of two ending there, the longer
                if at >= 0 and (best is None or (at + len(q), len(q)) > best[0]):
                    best = ((at + len(q), len(q)), ref)
            if best:
                return best[1]
        return None


def _demonstration(conv: list[dict]) -> str:
    """A one-shot prompt's example (every message before the last question), or ""."""
    users = [m for m in conv if m["role"] == "user"]
    return "\n".join(m["content"] for m in conv[:conv.index(users[-1])]) \
        if len(users) > 1 else ""


def _last_user(conv: list[dict]) -> str:
    return next((m["content"] for m in reversed(conv) if m["role"] == "user"), "")


def _references() -> dict[str, tuple[str, str, str]]:
    db = config.db_path()
    if not db.exists():
        return {}
    rows = Store(db).rows("SELECT question, answer, solution FROM problems")
    return {r["question"].strip(): (r["question"].strip(), r["answer"], r["solution"] or "")
            for r in rows}


def announce(path: str) -> None:
    print(f"SEI_TEST_TARGET={path}: answers come from the tests' scripted target, "
          "not a model", file=sys.stderr)
