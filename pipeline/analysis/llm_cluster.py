"""Clustering keyphrases with the instructor, as the paper's released code does: the
instructor names the first error types (with a description) from a sample of keyphrases,
then assigns every keyphrase to a type in batches, opening a new type where none fits.

Prompts are versioned files (prompts/cluster_propose_v1, cluster_assign_v1); every reply
is schema-checked, cached and logged by pipeline/models/instructor.py, so a rerun with the same
keyphrases and parameters costs nothing and gives the same types. A reply that skips a
keyphrase or names a type that does not exist gets one more request for those keyphrases;
what is still unassigned after it is noise, like HDBSCAN's, and counted.
"""

from __future__ import annotations

import dataclasses
import math
import random

from pipeline.core.progress import Progress, no_progress
from pipeline.models.instructor import Instructor, InstructorError, from_env, load_prompt
from pipeline.storage.store import Store

PROPOSE, ASSIGN = "cluster_propose_v1", "cluster_assign_v1"
# Room for a batch's assignments and a few new types (the instructor's default of 256
# tokens is sized for one case's keyphrases).
MAX_TOKENS = 2048


@dataclasses.dataclass
class LLMClusters:
    labels: list[int]            # per distinct keyphrase: type index, -1 for unassigned
    types: list[dict]            # per type index: name, description
    calls: int                   # instructor requests made (cached ones included)
    unassigned: int


def instructor_for_clustering(instructor=None) -> Instructor:
    """The instructor that clusters, or a ValueError saying how to configure one."""
    ins = instructor or from_env()
    if ins is None:
        raise ValueError("clustering with --method llm needs an instructor model: set "
                         "SEI_INSTRUCTOR_MODEL (and OPENAI_BASE_URL for a local server) or "
                         "choose one on the Settings page")
    if isinstance(ins, dict):
        ins = Instructor(**ins)
    return dataclasses.replace(ins, max_tokens=max(ins.max_tokens, MAX_TOKENS))


def n_calls(n_texts: int, batch: int) -> int:
    """Requests for a clustering of n distinct keyphrases when every reply is whole."""
    return 1 + math.ceil(n_texts / batch) if n_texts else 0


def _numbered(texts: list[str]) -> str:
    return "\n".join(f"[{i}] {t}" for i, t in enumerate(texts, 1))


def _types_text(types: list[dict]) -> str:
    return "\n".join(f"{i}. {t['name']}: {t.get('description') or ''}".rstrip(": ")
                     for i, t in enumerate(types, 1))


def _read_reply(r: dict, idx: list[int], types: list[dict], labels: list[int]) -> list[int]:
    """Take one assignment reply into `labels` (and its new types into `types`); returns
    the texts it left out or gave a type that does not exist."""
    known = len(types)
    new: dict[int, int] = {}
    for t in r.get("new_types") or []:
        # a new type must take a number past the known ones; its place is its order
        if t["id"] > known and t["id"] not in new:
            new[t["id"]] = known + len(new)
            types.append({"name": t["name"].strip(),
                          "description": (t.get("description") or "").strip()})
    missed = []
    for pos, i in enumerate(idx, 1):
        tid = r["assign"].get(str(pos))
        label = None if tid is None else tid - 1 if tid <= known else new.get(tid)
        if label is None:
            missed.append(i)
        else:
            labels[i] = label
    return missed


def cluster_texts(store: Store, texts: list[str], instructor, sample: int = 60,
                  batch: int = 40, max_types: int = 12, seed: int = 0,
                  progress: Progress = no_progress) -> LLMClusters:
    """Error types for distinct keyphrase texts by the instructor (see the module doc)."""
    ins = instructor_for_clustering(instructor)
    if not texts:
        raise ValueError("no keyphrases to cluster")
    rng = random.Random(seed)
    seed_texts = sorted(texts) if len(texts) <= sample else rng.sample(sorted(texts), sample)
    total = n_calls(len(texts), batch)
    progress(0, total, "cluster", f"llm: naming types from {len(seed_texts)} keyphrases")
    template, schema = load_prompt(PROPOSE)
    reply = ins.ask_json(store, template.format(keyphrases=_numbered(seed_texts),
                                                max_types=max_types),
                         schema, purpose="cluster: propose types")
    types = [{"name": t["name"].strip(), "description": (t.get("description") or "").strip()}
             for t in reply["types"]][:max_types]
    calls = 1
    labels = [-1] * len(texts)
    template, schema = load_prompt(ASSIGN)
    todo = list(range(len(texts)))
    for attempt in range(2):  # the second pass asks again for what a reply left out
        batches = [todo[i:i + batch] for i in range(0, len(todo), batch)]
        missed: list[int] = []
        for n, idx in enumerate(batches, 1):
            prompt = template.format(types=_types_text(types), next_id=len(types) + 1,
                                     keyphrases=_numbered([texts[i] for i in idx]))
            try:
                r = ins.ask_json(store, prompt, schema,
                                 purpose=f"cluster: assign batch {n} of {len(batches)}"
                                         + (" (again)" if attempt else ""))
            except InstructorError:
                if attempt:
                    raise
                missed += idx  # asked once more in the second pass
                continue
            finally:
                calls += 1
                progress(min(calls, total), max(total, calls), "cluster",
                         f"llm: assigned batch {n} of {len(batches)}, {len(types)} types")
            missed += _read_reply(r, idx, types, labels)
        todo = missed
        if not todo:
            break
    # Types proposed but given no keyphrase are dropped; the rest numbered in order.
    used = sorted({x for x in labels if x >= 0})
    renum = {old: new for new, old in enumerate(used)}
    return LLMClusters([renum.get(x, -1) for x in labels], [types[i] for i in used], calls,
                       labels.count(-1))
