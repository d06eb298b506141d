"""Importers for math datasets (GSM8K, MATH, SVAMP, generic JSONL) into the store.

A file is parsed completely before anything is written: every malformed record is
reported as `file:line: reason` (up to MAX_ERRORS of them) and nothing is imported.
Valid rows go in one transaction. A problem's id is the file's own id when it has one
(MATH `unique_id`, SVAMP `ID`, a mapped `pid`), else derived from its content, so a
second file imported into the same dataset/split adds its rows instead of dropping them.
A row is skipped, and reported, only when the same question and answer are already
present, or when its id already names a different problem (a clash).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.answers import last_boxed
from pipeline.store import Store

MAX_ERRORS = 20
MAX_DEPTH = 64  # JSON nested deeper than this is refused (and never recursed into)
FIELDS = ("question", "answer", "solution", "pid")


class DataFileError(ValueError):
    """Malformed input; the message names the file and line."""


class BadRecord(ValueError):
    """One record is unusable; the reason, without file and line."""


def _kind(v) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean"}.get(type(v), type(v).__name__)


def scalar(rec: dict, name: str, required: bool = True) -> str | None:
    """A field as text: strings as they are, numbers without a spurious '.0'. Null, NaN,
    booleans, objects and arrays are refused with the field's name."""
    if name not in rec:
        if required:
            raise BadRecord(f"missing field {name!r}")
        return None
    v = rec[name]
    if v is None:
        if required:
            raise BadRecord(f"field {name!r} is null")
        return None
    if isinstance(v, bool) or isinstance(v, (dict, list)):
        raise BadRecord(f"field {name!r} is {_kind(v)}, not a single value")
    if isinstance(v, float):
        if not math.isfinite(v):
            raise BadRecord(f"field {name!r} is {v} (not a number)")
        return str(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return v
    raise BadRecord(f"field {name!r} is {_kind(v)}")


def _text(rec: dict, name: str) -> str:
    s = scalar(rec, name)
    if not s.strip():
        raise BadRecord(f"field {name!r} is empty")
    return s


def _gsm8k(rec: dict) -> dict:
    q, a = _text(rec, "question"), _text(rec, "answer")
    if "####" not in a:
        raise BadRecord("field 'answer' has no '####' final line")
    final = a.rsplit("####", 1)[1].strip().replace(",", "")
    if not final:
        raise BadRecord("field 'answer' is empty after '####'")
    return {"question": q, "solution": a, "answer": final}


def _math(rec: dict) -> dict:
    sol = _text(rec, "solution")
    ans = scalar(rec, "answer", required=False) or last_boxed(sol)
    if not ans or not ans.strip():
        raise BadRecord("field 'solution' has no \\boxed{} answer and there is no 'answer'")
    meta = {k: rec[k] for k in ("level", "type", "subject", "unique_id") if k in rec}
    return {"question": _text(rec, "problem"), "solution": sol, "answer": ans.strip(),
            "meta": meta, "pid": scalar(rec, "unique_id", required=False)}


def _svamp(rec: dict) -> dict:
    return {"question": f"{_text(rec, 'Body').strip()} {_text(rec, 'Question').strip()}",
            "solution": scalar(rec, "Equation", required=False),
            "answer": _text(rec, "Answer"),
            "meta": {"type": scalar(rec, "Type", required=False)},
            "pid": scalar(rec, "ID", required=False)}


FORMATS: dict[str, Callable[[dict], dict]] = {"gsm8k": _gsm8k, "math": _math, "svamp": _svamp}


def _options(name: str, v) -> str:
    """A list or mapping of multiple-choice options as lines '(A) ...'."""
    items = (list(v.items()) if isinstance(v, dict)
             else [(chr(ord("A") + i), x) for i, x in enumerate(v)])
    if not items:
        raise BadRecord(f"field {name!r} is an empty list of options")
    if len(items) > 26 and isinstance(v, list):
        raise BadRecord(f"field {name!r} has {len(items)} options (at most 26)")
    return "\n".join(f"({k}) {scalar({name: x}, name)}" for k, x in items)


def generic(mapping: dict[str, list[str]]) -> Callable[[dict], dict]:
    """A parser for any JSONL given {our field: [their fields]}. `question` and `solution`
    may compose several fields: text fields are joined with a space, and a field that
    holds a list (or an object) of options is appended as lines '(A) ...', '(B) ...'.
    `answer` and `pid` name one field each."""
    unknown = set(mapping) - set(FIELDS)
    if unknown:
        raise ValueError(f"--map: unknown field(s) {sorted(unknown)}; ours are {list(FIELDS)}")
    missing = {"question", "answer"} - set(mapping)
    if missing:
        raise ValueError(f"--map lacks {sorted(missing)} (e.g. question=prompt,answer=target)")
    for k in ("answer", "pid"):
        if len(mapping.get(k, [])) > 1:
            raise ValueError(f"--map: {k} names one field, not {'+'.join(mapping[k])}")

    def compose(rec: dict, names: list[str]) -> str:
        parts = []
        for name in names:
            v = rec.get(name)
            if isinstance(v, (list, dict)) and name in rec:
                parts.append("\n" + _options(name, v))
            else:
                parts.append((" " if parts else "") + _text(rec, name).strip())
        return "".join(parts).strip()

    def parse(rec: dict) -> dict:
        out = {"question": compose(rec, mapping["question"]),
               "answer": _text(rec, mapping["answer"][0]).strip()}
        if "solution" in mapping:
            out["solution"] = compose(rec, mapping["solution"])
        if "pid" in mapping:
            out["pid"] = _text(rec, mapping["pid"][0])
        return out
    return parse


def parse_mapping(spec: str) -> dict[str, list[str]]:
    """'question=body+question,answer=target' -> {'question': ['body', 'question'],
    'answer': ['target']}."""
    out: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise ValueError(f"--map: bad item {part!r}; expected ours=theirs[+theirs...]")
        k, v = part.split("=", 1)
        names = [n.strip() for n in v.split("+")]
        if not k.strip() or not all(names):
            raise ValueError(f"--map: bad item {part!r}; expected ours=theirs[+theirs...]")
        out[k.strip()] = names
    return out


def _depth(text: str) -> int:
    """Deepest bracket nesting outside strings (checked before json.loads recurses)."""
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def _read_text(path: Path) -> str:
    """The file as text (UTF-8, with or without a BOM); other files are refused by name."""
    if path.is_dir():
        raise DataFileError(f"{path}: is a directory, not a JSONL file")
    if not path.exists():
        raise DataFileError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or (
            len(raw) >= 4 and b"\x00\x00" in (raw[0:4:2], raw[1:4:2])):
        raise DataFileError(f"{path}: looks like UTF-16; save it as UTF-8 JSONL")
    if b"\x00" in raw:
        raise DataFileError(f"{path}: binary file (NUL bytes), not UTF-8 JSONL")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataFileError(f"{path}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x}); "
                           "save the file as UTF-8") from None


def content_id(split: str, question: str, answer: str) -> str:
    """A problem id from its content, for files without ids: the same problem gets the
    same id on every import."""
    h = hashlib.sha256(json.dumps([question, answer], ensure_ascii=False).encode())
    return f"{split}-{h.hexdigest()[:12]}"


def read_jsonl(path: Path, parse: Callable[[dict], dict], dataset: str,
               split: str) -> list[dict]:
    """Every row of a JSONL file, or DataFileError listing every bad record by line."""
    errors: list[str] = []
    n_errors = 0
    rows = []
    text = _read_text(path)
    src = str(path.resolve())
    # Split on newlines only: U+2028 and friends are legal inside JSON strings.
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            if line.count("[") + line.count("{") > MAX_DEPTH and _depth(line) > MAX_DEPTH:
                raise BadRecord(f"JSON nested deeper than {MAX_DEPTH} levels")
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadRecord(f"not valid JSON ({e.msg} at column {e.colno})") from None
            except RecursionError:
                raise BadRecord(f"JSON nested deeper than {MAX_DEPTH} levels") from None
            if not isinstance(rec, dict):
                raise BadRecord(f"expected a JSON object, got {_kind(rec)}")
            row = parse(rec)
        except BadRecord as e:
            n_errors += 1
            if len(errors) < MAX_ERRORS:
                errors.append(f"{path}:{n}: {e}")
            continue
        except Exception as e:  # a parser slip is still this record's error, not a crash
            n_errors += 1
            if len(errors) < MAX_ERRORS:
                errors.append(f"{path}:{n}: bad record ({type(e).__name__}: {e})")
            continue
        pid = row.get("pid")
        row.update(pid=str(pid) if pid not in (None, "") else content_id(
            split, row["question"], row["answer"]), dataset=dataset, split=split,
            source_file=src, source_line=n)
        rows.append(row)
    if n_errors:
        more = f"\n... and {n_errors - len(errors)} more" if n_errors > len(errors) else ""
        raise DataFileError(f"{n_errors} bad record(s):\n" + "\n".join(errors) + more)
    if not rows:
        raise DataFileError(f"{path}: no records")
    return rows


@dataclass
class ImportReport:
    read: int
    added: int
    same: list[str] = field(default_factory=list)   # skipped: same content already present
    clash: list[str] = field(default_factory=list)  # skipped: id names another problem

    def summary(self) -> str:
        """The import in one line: read, new, and why rows were skipped."""
        s = f"{self.read} problems read, {self.added} new"
        if self.same or self.clash:
            s += (f"; skipped {len(self.same)} with the same question and answer already "
                  f"present, {len(self.clash)} whose id names a different problem")
        return s


def import_file(store: Store, path: str | Path, fmt: str, dataset: str, split: str,
                mapping: dict[str, list[str]] | None = None) -> ImportReport:
    """Import a JSONL file: all valid or nothing; the report says what was skipped."""
    path = Path(path)
    if fmt == "generic":
        if not mapping:
            raise DataFileError("--format generic needs --map question=FIELD,answer=FIELD")
        parse = generic(mapping)
    elif mapping:
        raise DataFileError(f"--map applies to --format generic only, not to {fmt}")
    elif fmt not in FORMATS:
        raise DataFileError(f"unknown format {fmt!r}; one of {sorted(FORMATS)} or generic")
    else:
        parse = FORMATS[fmt]
    rows = read_jsonl(path, parse, dataset, split)
    res = store.import_problems(rows)

    def where(p: dict) -> str:
        return f"{dataset}/{split}/{p['pid']} ({p['source_file']}:{p['source_line']})"
    same = [f"{path}:{r['source_line']}: skipped, same question and answer as {where(p)}"
            for r, p in res["same"]]
    clash = [f"{path}:{r['source_line']}: skipped, id {r['pid']!r} already names a "
             f"different problem: {where(p)}" for r, p in res["clash"]]
    return ImportReport(len(rows), res["added"], same, clash)


def import_demo(store: Store, n_train: int, n_test: int, seed: int = 0,
                mix: dict[int, float] | None = None) -> dict[str, int]:
    """Demo problems into the store; `mix` is the share per difficulty tier."""
    from pipeline import demo

    splits = demo.demo_splits(n_train, n_test, seed, mix=mix)
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
