"""Importers for math datasets into the store: every layout of the shared benchmarks by
name (FORMATS), and any other JSONL through a --map of its fields (`generic`).

A file is parsed completely before anything is written: every malformed record is
reported as `file:line: reason` (up to MAX_ERRORS of them) and nothing is imported.
Valid rows go in one transaction. A problem's id is the file's own id when it has one
(MATH `unique_id`, SVAMP `ID`, a mapped `pid`), else derived from its content, so a
second file imported into the same dataset/split adds its rows instead of dropping them.
A row is skipped, and reported, only when the same question and answer are already
present, or when its id already names a different problem (a clash).

Every reference is judged against itself written as a model would ("The answer is X.");
the import reports, without refusing, each one that cannot match (file:line). Problems
already in other dataset splits can be left out (`exclude`): MATH's test file minus
MATH-500 is a train pool that does not overlap the MATH-500 test set.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.problems.answers import judge, last_boxed
from pipeline.storage.store import Store

MAX_ERRORS = 20
MAX_DEPTH = 64  # JSON nested deeper than this is refused (and never recursed into)
FIELDS = ("question", "answer", "solution", "pid", "options", "meta")


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


_MARKER = re.compile(r"\(?A[).]\s*")


def _option_items(name: str, v) -> list[tuple[str, object]]:
    """Options as (letter, text): from a list, a mapping, or one text 'A) .. B) ..' (also
    '(A) ..' or 'A. ..'; each later letter must use the first one's marker)."""
    if isinstance(v, dict):
        return list(v.items())
    if isinstance(v, list):
        if len(v) > 26:
            raise BadRecord(f"field {name!r} has {len(v)} options (at most 26)")
        return [(chr(ord("A") + i), x) for i, x in enumerate(v)]
    text = scalar({name: v}, name).strip()
    m = _MARKER.match(text)
    if not m:
        raise BadRecord(f"field {name!r} is not options like 'A) .. B) ..'")
    paren, close = text.startswith("("), m.group().strip()[-1]
    items, start = [], m.end()
    for i in range(1, 26):
        letter = chr(ord("A") + i)
        mark = re.escape(("(" if paren else "") + letter + close)
        nxt = re.compile(rf"\s{mark}(?:\s+|$)").search(text, start)
        if not nxt:
            break
        items.append((chr(ord("A") + i - 1), text[start:nxt.start()].strip()))
        start = nxt.end()
    items.append((chr(ord("A") + len(items)), text[start:].strip()))
    if len(items) < 2:
        raise BadRecord(f"field {name!r} has one option only, not 'A) .. B) ..'")
    return items


def _options(name: str, v) -> str:
    """A list, mapping or text 'A) .. B) ..' of multiple-choice options as lines '(A) ...'."""
    items = _option_items(name, v)
    if not items:
        raise BadRecord(f"field {name!r} is an empty list of options")
    return "\n".join(f"({k}) {scalar({name: x}, name)}" for k, x in items)


def generic(mapping: dict[str, list[str]]) -> Callable[[dict], dict]:
    """A parser for any JSONL given {our field: [their fields]}. `question` and `solution`
    may compose several fields: text fields are joined with a space, and a field that
    holds a list (or an object) of options is appended as lines '(A) ...', '(B) ...'.
    `options` names fields of options (a list, an object or a text 'A) .. B) ..') that are
    appended to the question that way; `meta` names fields kept, when present, in the
    problem's meta. `answer` and `pid` name one field each."""
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
        q = compose(rec, mapping["question"])
        for name in mapping.get("options", []):
            if name not in rec:
                raise BadRecord(f"missing field {name!r}")
            q += "\n" + _options(name, rec[name])
        out = {"question": q, "answer": _text(rec, mapping["answer"][0]).strip()}
        if "solution" in mapping:
            out["solution"] = compose(rec, mapping["solution"])
        if "pid" in mapping:
            out["pid"] = _text(rec, mapping["pid"][0])
        if "meta" in mapping:
            out["meta"] = {k: scalar(rec, k, required=False) for k in mapping["meta"]
                           if rec.get(k) is not None}
        return out
    return parse


# The shared benchmarks' layouts by name (see ../shared/data/benchmarks/MANIFEST.md).
# Where a file's fields map straight onto ours the format is a declared --map for
# `generic`; GSM8K and MATH take their answer out of the solution text.
MAPPINGS: dict[str, dict[str, list[str]]] = {
    "svamp": {"question": ["Body", "Question"], "answer": ["Answer"],
              "solution": ["Equation"], "pid": ["ID"], "meta": ["Type"]},
    "college_math": {"question": ["question"], "answer": ["answer"],
                     "meta": ["data_source", "data_topic", "question_number"]},
    "gaokao2023en": {"question": ["question"], "answer": ["answer"], "meta": ["source", "id"]},
    "sat_math": {"question": ["question"], "options": ["options"], "answer": ["Answer"],
                 "pid": ["id"]},
}
_ANSWER_IN_QUESTION = re.compile(r"answers?\s*:\s*([^\n]*?)\s*$", re.I)


def answer_in_question(parse: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """`parse` for a file where a record may have an empty answer and its question end
    in "Answer: X" instead (two of GaoKao 2023's): X is the answer, and is cut from the
    question (which would otherwise give it away); meta says so."""
    def fixed(rec: dict) -> dict:
        q, a = rec.get("question"), rec.get("answer")
        if isinstance(q, str) and isinstance(a, str) and not a.strip():
            m = ([None, *_ANSWER_IN_QUESTION.finditer(q)])[-1]  # the last "Answer: X"
            if m and m.group(1):
                out = parse({**rec, "question": q[:m.start()], "answer": m.group(1)})
                out["meta"] = {**out.get("meta", {}), "answer_from_question": True}
                return out
        return parse(rec)
    return fixed


FORMATS: dict[str, Callable[[dict], dict]] = {
    "gsm8k": _gsm8k, "math": _math, "math500": _math,  # MATH-500: MATH with answer, unique_id
    **{name: generic(m) for name, m in MAPPINGS.items()}}
FORMATS["gaokao2023en"] = answer_in_question(FORMATS["gaokao2023en"])


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


def problem_key(question: str) -> str:
    """A problem's text for matching across files: Unicode NFKC, case folded, without
    whitespace (MATH and MATH-500 hold the same problems spaced differently here and
    there)."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", question)).casefold()


def parse_exclude(spec: str) -> tuple[str, str]:
    """'math500:test' -> ('math500', 'test')."""
    d, sep, s = spec.partition(":")
    if not sep or not d.strip() or not s.strip():
        raise ValueError(f"--exclude: bad split {spec!r}; expected DATASET:SPLIT, "
                         "e.g. math500:test")
    return d.strip(), s.strip()


def as_a_model_writes_it(answer: str) -> str:
    """A reference answer as a model's final line states it."""
    return f"The answer is {answer}."


def self_check(rows: list[dict], timeout_s: float = 5.0) -> list[str]:
    """Every reference judged against itself as a model would write it; one message
    (file:line) for each that cannot match, e.g. one the extractor cannot read back."""
    bad = []
    for r in rows:
        v = judge(as_a_model_writes_it(r["answer"]), r["answer"], timeout_s=timeout_s)
        if not v["correct"]:
            bad.append(f"{r['source_file']}:{r['source_line']}: reference {r['answer']!r} "
                       f"does not match itself written as 'The answer is ...' "
                       f"(read back {v['pred']!r}: {v['detail']})")
    return bad


@dataclass
class ImportReport:
    read: int
    added: int
    same: list[str] = field(default_factory=list)   # skipped: same content already present
    clash: list[str] = field(default_factory=list)  # skipped: id names another problem
    excluded: dict[str, int] = field(default_factory=dict)  # "dataset/split" -> rows left out
    unmatched: list[str] = field(default_factory=list)  # references the judge cannot match

    def summary(self) -> str:
        """The import in one line: read, new, and why rows were skipped."""
        s = f"{self.read} problems read, {self.added} new"
        if self.excluded:
            s += "; excluded " + ", ".join(f"{n} already in {k}"
                                           for k, n in self.excluded.items())
        if self.same or self.clash:
            s += (f"; skipped {len(self.same)} with the same question and answer already "
                  f"present, {len(self.clash)} whose id names a different problem")
        if self.unmatched:
            s += f"; {len(self.unmatched)} reference(s) the judge cannot match to themselves"
        return s


def import_file(store: Store, path: str | Path, fmt: str, dataset: str, split: str,
                mapping: dict[str, list[str]] | None = None,
                exclude: list[tuple[str, str]] | None = None,
                check: bool = True) -> ImportReport:
    """Import a JSONL file: all valid or nothing; the report says what was skipped.
    `exclude`: (dataset, split)s already in the store whose problems (by problem_key)
    are left out; each must hold problems. `check`: judge every reference against
    itself and report those that cannot match (they are imported all the same)."""
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
    taken: dict[str, str] = {}  # problem_key -> "dataset/split" it is in
    for d, s in exclude or []:
        if (d, s) == (dataset, split):
            raise DataFileError(f"--exclude {d}:{s} is the split being imported")
        probs = store.problems(d, s)
        if not probs:
            raise DataFileError(f"--exclude {d}:{s}: no such split in the store; import it "
                                "first (sei data list shows what is there)")
        for p in probs:
            taken.setdefault(problem_key(p["question"]), f"{d}/{s}")
    rows = read_jsonl(path, parse, dataset, split)
    n_read = len(rows)
    excluded: dict[str, int] = {f"{d}/{s}": 0 for d, s in exclude or []}
    if taken:
        kept = []
        for r in rows:
            where = taken.get(problem_key(r["question"]))
            if where:
                excluded[where] += 1
            else:
                kept.append(r)
        rows = kept
    unmatched = self_check(rows) if check else []
    res = store.import_problems(rows) if rows else {"added": 0, "same": [], "clash": []}

    def where(p: dict) -> str:
        return f"{dataset}/{split}/{p['pid']} ({p['source_file']}:{p['source_line']})"
    same = [f"{path}:{r['source_line']}: skipped, same question and answer as {where(p)}"
            for r, p in res["same"]]
    clash = [f"{path}:{r['source_line']}: skipped, id {r['pid']!r} already names a "
             f"different problem: {where(p)}" for r, p in res["clash"]]
    return ImportReport(n_read, res["added"], same, clash, excluded, unmatched)


def import_demo(store: Store, n_train: int, n_test: int, seed: int = 0,
                mix: dict[int, float] | None = None) -> dict[str, int]:
    """Demo problems into the store; `mix` is the share per difficulty tier."""
    from pipeline.problems import demo

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
