"""Importers for math datasets (GSM8K, MATH, generic JSONL) into the store.

A file is parsed completely before anything is written, and the rows go in one
transaction: a malformed line aborts the import with its file and line number and
leaves the store unchanged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from pipeline.store import Store


class ImportError_(ValueError):
    """Malformed input; the message names the file and line."""


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (balanced braces)."""
    i = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if i < 0:
        return None
    j = text.index("{", i) + 1
    depth = 1
    k = j
    while k < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        k += 1
    return text[j:k - 1].strip() if depth == 0 else None


def _gsm8k(rec: dict, n: int) -> dict:
    q, a = rec["question"], rec["answer"]
    if "####" not in a:
        raise KeyError("answer has no '####' final line")
    final = a.rsplit("####", 1)[1].strip().replace(",", "")
    if not final:
        raise KeyError("empty answer after '####'")
    return {"question": q, "solution": a, "answer": final}


def _math(rec: dict, n: int) -> dict:
    sol = rec["solution"]
    ans = rec.get("answer") or _boxed(sol)
    if not ans:
        raise KeyError("solution has no \\boxed{} answer and no 'answer' field")
    meta = {k: rec[k] for k in ("level", "type", "subject", "unique_id") if k in rec}
    return {"question": rec["problem"], "solution": sol, "answer": str(ans), "meta": meta,
            "pid": rec.get("unique_id")}


def _svamp(rec: dict, n: int) -> dict:
    ans = rec["Answer"]
    if isinstance(ans, float) and ans.is_integer():
        ans = int(ans)
    return {"question": f"{rec['Body'].strip()} {rec['Question'].strip()}",
            "solution": rec.get("Equation"), "answer": str(ans),
            "meta": {"type": rec.get("Type")}, "pid": rec.get("ID")}


FORMATS: dict[str, Callable[[dict, int], dict]] = {
    "gsm8k": _gsm8k, "math": _math, "svamp": _svamp}


def generic(mapping: dict[str, str]) -> Callable[[dict, int], dict]:
    """A parser for any JSONL given {our field: their field} for question, answer
    and optionally solution and pid."""
    missing = {"question", "answer"} - set(mapping)
    if missing:
        raise ValueError(f"field mapping lacks {sorted(missing)}")

    def parse(rec: dict, n: int) -> dict:
        out = {k: rec[v] for k, v in mapping.items()}
        out["answer"] = str(out["answer"])
        return out
    return parse


def parse_mapping(spec: str) -> dict[str, str]:
    """'question=prompt,answer=target' -> {'question': 'prompt', 'answer': 'target'}."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise ValueError(f"bad mapping item {part!r}; expected ours=theirs")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def read_jsonl(path: Path, parse: Callable[[dict, int], dict], dataset: str,
               split: str) -> list[dict]:
    rows, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ImportError_(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from e
            if not isinstance(rec, dict):
                raise ImportError_(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
            try:
                row = parse(rec, n)
            except KeyError as e:
                raise ImportError_(f"{path}:{n}: missing or bad field {e}") from e
            if not isinstance(row.get("question"), str) or not row["question"].strip():
                raise ImportError_(f"{path}:{n}: empty question")
            pid = str(row.get("pid") or f"{split}-{n:06d}")
            if pid in seen:
                raise ImportError_(f"{path}:{n}: duplicate id {pid!r}")
            seen.add(pid)
            row.update(pid=pid, dataset=dataset, split=split, source_file=str(path.resolve()),
                       source_line=n)
            rows.append(row)
    if not rows:
        raise ImportError_(f"{path}: no records")
    return rows


def import_file(store: Store, path: str | Path, fmt: str, dataset: str, split: str,
                mapping: dict[str, str] | None = None) -> tuple[int, int]:
    """Import a JSONL file. Returns (rows in file, rows newly added)."""
    path = Path(path)
    if not path.exists():
        raise ImportError_(f"{path}: no such file")
    parse = generic(mapping) if fmt == "generic" else FORMATS[fmt]
    rows = read_jsonl(path, parse, dataset, split)
    return len(rows), store.insert_problems(rows)


def import_demo(store: Store, n_train: int, n_test: int, seed: int = 0) -> dict[str, int]:
    from pipeline import demo

    splits = demo.demo_splits(n_train, n_test, seed)
    added = {}
    for split, probs in splits.items():
        rows = [dict(p, dataset="demo", split=split, source_file=f"pipeline.demo(seed={seed})",
                     source_line=i + 1) for i, p in enumerate(probs)]
        added[split] = store.insert_problems(rows)
    return added


def data_hash(problems: list[dict]) -> str:
    """Content hash of exactly the problems a run sees, in order."""
    h = hashlib.sha256()
    for p in problems:
        h.update(json.dumps([p["dataset"], p["split"], p["pid"], p["question"], p["answer"]],
                            ensure_ascii=False).encode())
    return h.hexdigest()[:16]

