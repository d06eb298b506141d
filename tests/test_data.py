"""Store, migrations and importers on the real benchmark files."""

import json
import os
import re
import subprocess
import sys
from decimal import Decimal

import duckdb
import pytest
from click.testing import CliRunner

from pipeline.core.config import ROOT
from pipeline.problems.answers import answers_equal, extract_answer, judge
from pipeline.problems.data import DataFileError, import_demo, import_file
from pipeline.shells.cli import cli
from pipeline.storage import migrations
from pipeline.storage.store import SCHEMA_VERSION, Store

FILES = [  # (path, format, rows in MANIFEST.md)
    ("gsm8k/train.jsonl", "gsm8k", 7473),
    ("gsm8k/test.jsonl", "gsm8k", 1319),
    ("math/test.jsonl", "math", 5000),
    ("math500/test.jsonl", "math", 500),
    ("svamp/test.jsonl", "svamp", 1000),
]


def test_migrations_are_forward_and_idempotent(tmp_path):
    db = tmp_path / "m.duckdb"
    # A store left at v1 by an older version is brought forward without losing rows.
    _legacy_store(db, 1)
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO problems (dataset, split, pid, question, answer) "
                "VALUES ('d', 's', '1', 'q', '2')")
    con.close()
    s = Store(db)
    assert s.migrate() == SCHEMA_VERSION
    assert s.migrate() == SCHEMA_VERSION
    assert s.version() == SCHEMA_VERSION
    assert s.count("problems") == 1
    assert s.count("jobs") == 0
    con = duckdb.connect(str(db), read_only=True)
    assert sorted(migrations.applied(con)) == migrations.names()
    con.close()


def _legacy_store(db, version: int) -> None:
    """A store as the numbered migrations left it at `version` (before steps had names)."""
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_version (version INTEGER)")
    for v, step in enumerate(migrations.MIGRATIONS[:version], start=1):
        step(con)
        con.execute("INSERT INTO schema_version VALUES (?)", [v])
    con.close()


def test_a_store_of_the_numbered_scheme_is_not_migrated_again(tmp_path):
    """Version n of the numbered scheme is the first n named steps: a store at the last
    number is current (re-running a step would fail: its tables exist), and it is only
    read; one further behind gets the missing steps, recorded by name."""
    db = tmp_path / "v.duckdb"
    _legacy_store(db, len(migrations.MIGRATIONS))
    assert Store(db).migrate() == SCHEMA_VERSION
    con = duckdb.connect(str(db), read_only=True)
    assert migrations.applied(con) == migrations.names()
    assert migrations.pending(con) == []
    con.close()
    db2 = tmp_path / "v2.duckdb"
    _legacy_store(db2, 2)
    assert Store(db2).migrate() == SCHEMA_VERSION
    con = duckdb.connect(str(db2), read_only=True)
    rows = con.execute("SELECT name FROM migrations ORDER BY name").fetchall()
    con.close()
    assert [r[0] for r in rows] == migrations.names()
    assert Store(db2).count("iterations") == 0


@pytest.mark.slow
@pytest.mark.parametrize("rel,fmt,n", FILES)
def test_import_real_files(store, bench, rel, fmt, n):
    rep = import_file(store, bench / rel, fmt, rel.split("/")[0], rel.split("/")[1][:-6])
    assert (rep.read, rep.added, rep.same, rep.clash) == (n, n, [], [])
    rows = store.problems(rel.split("/")[0], rel.split("/")[1][:-6])
    assert len(rows) == n
    assert all(r["source_file"].endswith(rel) and r["source_line"] >= 1 for r in rows)
    # Every reference answer (a sample of 150) is found in a model-style output and judged
    # right there; a plain-number answer also equals itself written with a separator and
    # trailing zeros, and differs from the number one above it.
    sample = rows[::max(1, len(rows) // 150)]
    bad = [r["pid"] for r in sample
           if not judge(f"So we get that.\nThe answer is $\\boxed{{{r['answer']}}}$.",
                        r["answer"])["correct"]]
    assert bad == [], f"{len(bad)} answers not found in a boxed output, e.g. {bad[:5]}"
    numbers = [r for r in sample if re.fullmatch(r"-?\d+(\.\d+)?", r["answer"].strip())]
    assert len(numbers) >= (40 if fmt != "math" else 10)
    for r in numbers:
        v = Decimal(r["answer"].strip())
        assert answers_equal(f"{v:,.2f}", r["answer"]), r["pid"]
        assert not answers_equal(str(v + 1), r["answer"]), r["pid"]
    # Importing again adds nothing, and says why for every row.
    again = import_file(store, bench / rel, fmt, rel.split("/")[0], rel.split("/")[1][:-6])
    assert (again.added, len(again.same), again.clash) == (0, n, [])
    assert store.count("problems") == n


def test_gsm8k_solutions_extract_to_their_answer(store, bench):
    import_file(store, bench / "gsm8k/test.jsonl", "gsm8k", "gsm8k", "test")
    for r in store.problems("gsm8k", "test")[:300]:
        pred, method = extract_answer(r["solution"])
        assert method == "####" and answers_equal(pred, r["answer"]), r["pid"]


def test_malformed_jsonl_names_line_and_writes_nothing(store, bench, tmp_path):
    import_file(store, bench / "svamp/test.jsonl", "svamp", "svamp", "test")
    before = store.count("problems")
    lines = (bench / "gsm8k/test.jsonl").read_text().splitlines()[:10]
    lines[6] = lines[6][:40]  # cut a record in half
    bad = tmp_path / "broken.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"broken\.jsonl:7: not valid JSON"):
        import_file(store, bad, "gsm8k", "gsm8k", "test")
    assert store.count("problems") == before

    lines = (bench / "gsm8k/test.jsonl").read_text().splitlines()[:5]
    rec = json.loads(lines[3])
    rec["answer"] = rec["answer"].split("####")[0]
    lines[3] = json.dumps(rec)
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFileError, match=r"broken\.jsonl:4: .*####"):
        import_file(store, bad, "gsm8k", "gsm8k", "test")
    assert store.count("problems") == before

    # Through the CLI: a clear message, non-zero exit, the store unchanged.
    r = CliRunner().invoke(cli, ["--db", str(store.path), "data", "import", str(bad),
                                 "--format", "gsm8k", "--dataset", "g", "--split", "t"])
    assert r.exit_code == 1 and "broken.jsonl:4" in r.output and "nothing was imported" in r.output
    assert "Traceback" not in r.output
    assert store.count("problems") == before


def test_generic_mapping(store, bench):
    rep = import_file(store, bench / "svamp/test.jsonl", "generic", "svamp_g", "test",
                           {"question": ["Body"], "answer": ["Answer"], "pid": ["ID"]})
    assert rep.read == rep.added == 1000
    with pytest.raises(DataFileError, match=r"(?s)1000 bad record.*test\.jsonl:1: missing field "
                       r"'nope'.*test\.jsonl:20: missing field 'nope'.*and 980 more"):
        import_file(store, bench / "svamp/test.jsonl", "generic", "x", "y",
                    {"question": ["nope"], "answer": ["Answer"]})


def test_demo_import_is_deterministic_and_judges_itself(store):
    added = import_demo(store, 120, 40, seed=3)
    assert added == {"train": 120, "test": 40}
    assert import_demo(store, 120, 40, seed=3) == {"train": 0, "test": 0}
    train = store.problems("demo", "train")
    test = store.problems("demo", "test")
    assert not {p["question"] for p in train} & {p["question"] for p in test}
    for p in train + test:
        pred, method = extract_answer(p["solution"])
        assert method == "####" and answers_equal(pred, p["answer"])


def test_cli_demo_and_list(tmp_path):
    db = tmp_path / "c.duckdb"
    r = CliRunner().invoke(cli, ["--db", str(db), "data", "demo", "--n", "30", "--n-test", "10"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["--db", str(db), "data", "list"])
    assert r.exit_code == 0, r.output
    # one line per split: dataset, split, problems, where they came from
    assert [line.split() for line in r.output.splitlines()] == [
        ["demo", "test", "10", "pipeline.demo(seed=0)"],
        ["demo", "train", "30", "pipeline.demo(seed=0)"]]


def _lines(bench, a, b):
    return (bench / "gsm8k/test.jsonl").read_text().splitlines()[a:b]


def _write(path, lines, encoding="utf-8", bom=False):
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + ("\n".join(lines) + "\n").encode(encoding))
    return path


def test_second_file_into_same_split_adds_its_rows(store, bench, tmp_path):
    """Ids come from content: a second file is not dropped because its line numbers
    repeat; rows already present are skipped and named, with where they came from."""
    a = _write(tmp_path / "a.jsonl", _lines(bench, 0, 5))
    b = _write(tmp_path / "b.jsonl", _lines(bench, 5, 10))
    assert import_file(store, a, "gsm8k", "g", "test").added == 5
    rep = import_file(store, b, "gsm8k", "g", "test")
    assert (rep.read, rep.added, rep.same, rep.clash) == (5, 5, [], [])
    assert store.count("problems") == 10
    c = _write(tmp_path / "c.jsonl", _lines(bench, 3, 8) + _lines(bench, 20, 21))
    rep = import_file(store, c, "gsm8k", "g", "test")
    assert (rep.read, rep.added, len(rep.same), rep.clash) == (6, 1, 5, [])
    assert rep.same[0].startswith(f"{c}:1: skipped, same question and answer as g/test/")
    assert rep.same[0].endswith(f"({a.resolve()}:4)")
    assert rep.same[2].endswith(f"({b.resolve()}:1)")
    assert store.count("problems") == 11
    # The CLI reports the skipped rows by reason.
    r = CliRunner().invoke(cli, ["--db", str(store.path), "data", "import", str(c),
                                 "--format", "gsm8k", "--dataset", "g", "--split", "test"])
    assert r.exit_code == 0, r.output
    assert "6 problems read, 0 new; skipped 6 with the same question and answer" in r.output
    assert f"{c}:6: skipped, same question and answer" in r.output


def test_id_clash_is_skipped_and_named(store, tmp_path):
    one = _write(tmp_path / "one.jsonl", [json.dumps({"id": "p1", "q": "What is 2+2?", "a": 4}),
                                          json.dumps({"id": "p2", "q": "What is 3+3?", "a": 6})])
    two = _write(tmp_path / "two.jsonl", [json.dumps({"id": "p3", "q": "What is 1+1?", "a": 2}),
                                          json.dumps({"id": "p1", "q": "What is 5+5?", "a": 10}),
                                          json.dumps({"id": "p3", "q": "What is 7+7?", "a": 14})])
    m = {"question": ["q"], "answer": ["a"], "pid": ["id"]}
    assert import_file(store, one, "generic", "d", "s", m).added == 2
    rep = import_file(store, two, "generic", "d", "s", m)
    assert (rep.read, rep.added, rep.same) == (3, 1, [])
    assert rep.clash == [
        f"{two}:2: skipped, id 'p1' already names a different problem: d/s/p1 "
        f"({one.resolve()}:1)",
        f"{two}:3: skipped, id 'p3' already names a different problem: d/s/p3 "
        f"({two.resolve()}:1)"]
    rows = {p["pid"]: p for p in store.problems("d", "s")}
    assert set(rows) == {"p1", "p2", "p3"}
    assert rows["p1"]["question"] == "What is 2+2?" and rows["p3"]["answer"] == "2"


BAD_RECORDS = [  # (line, reason the message must give)
    ('{"question": "Q1?", "answer": "A #### 1"}', None),
    ('{"question": "Q2?", "answer": null}', "field 'answer' is null"),
    ('{"question": "Q3?", "answer": NaN}', "field 'answer' is nan (not a number)"),
    ('{"question": ["Q4?"], "answer": "#### 4"}', "field 'question' is an array"),
    ('{"question": {"t": "Q5?"}, "answer": "#### 5"}', "field 'question' is an object"),
    ('{"question": "Q6?", "answer": true}', "field 'answer' is a boolean"),
    ('{"question": "' + "[" * 5 + '", "answer": "#### 7", "x": ' + "[" * 200 + "]" * 200 + "}",
     "JSON nested deeper than 64 levels"),
    ("[1, 2, 3]", "expected a JSON object, got an array"),
    ('{"question": "Q9?", "answer": "#### 9"', "not valid JSON"),
    ('{"question": "   ", "answer": "#### 10"}', "field 'question' is empty"),
    ('{"answer": "#### 11"}', "missing field 'question'"),
    ('{"question": "Q12?", "answer": "no final line"}', "has no '####' final line"),
    ('"just a string"', "expected a JSON object, got str"),
    ('{"question": "Q14?", "answer": "#### 14", "x": ' + "[" * 100000 + "]" * 100000 + "}",
     "JSON nested deeper than 64 levels"),
]


def test_every_bad_record_is_named_and_nothing_is_written(store, bench, tmp_path):
    import_file(store, bench / "svamp/test.jsonl", "svamp", "svamp", "test")
    before = store.count("problems")
    bad = _write(tmp_path / "bad.jsonl", [line for line, _ in BAD_RECORDS])
    with pytest.raises(DataFileError) as e:
        import_file(store, bad, "gsm8k", "g", "t")
    msg = str(e.value)
    assert msg.startswith(f"{len(BAD_RECORDS) - 1} bad record(s):")
    got = {int(n): why for n, why in re.findall(rf"{re.escape(str(bad))}:(\d+): (.*)", msg)}
    want = {n: reason for n, (_, reason) in enumerate(BAD_RECORDS, 1) if reason}
    assert set(got) == set(want)  # every bad line, and only those
    assert [n for n in want if want[n] not in got[n]] == [], got
    assert store.count("problems") == before
    r = CliRunner().invoke(cli, ["--db", str(store.path), "data", "import", str(bad),
                                 "--format", "gsm8k", "--dataset", "g", "--split", "t"])
    assert r.exit_code == 1 and f"{bad}:3: field 'answer' is nan" in r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    assert store.count("problems") == before


def test_files_that_are_not_utf8_jsonl_are_refused_by_name(store, bench, tmp_path):
    lines = _lines(bench, 0, 3)
    cases = {
        tmp_path / "adir": "is a directory",
        _write(tmp_path / "u16.jsonl", lines, "utf-16"): "looks like UTF-16",
        _write(tmp_path / "u16le.jsonl", lines, "utf-16-le"): "looks like UTF-16",
        _write(tmp_path / "u16be.jsonl", lines, "utf-16-be"): "looks like UTF-16",
        tmp_path / "blob.bin": "binary file",
        tmp_path / "latin1.jsonl": "latin1.jsonl:2: not UTF-8 (byte 0xe9)",
        tmp_path / "missing.jsonl": "no such file",
    }
    (tmp_path / "adir").mkdir()
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "latin1.jsonl").write_bytes(
        (lines[0] + "\n" + json.dumps({"question": "caf\u00e9?", "answer": "#### 1"},
                                     ensure_ascii=False) + "\n").encode("latin-1"))
    for path, reason in cases.items():
        with pytest.raises(DataFileError) as e:
            import_file(store, path, "gsm8k", "g", "t")
        assert str(path.name) in str(e.value) and reason in str(e.value), (path, e.value)
        r = CliRunner().invoke(cli, ["--db", str(store.path), "data", "import", str(path),
                                     "--format", "gsm8k", "--dataset", "g", "--split", "t"])
        assert r.exit_code == 1 and reason in r.output and "Traceback" not in r.output
    assert store.count("problems") == 0


def test_utf8_bom_and_odd_line_separators_are_read(store, bench, tmp_path):
    rec = {"question": "Line\u2028separated question?", "answer": "#### 3"}
    f = _write(tmp_path / "bom.jsonl", _lines(bench, 0, 2) + [json.dumps(rec, ensure_ascii=False)],
               bom=True)
    rep = import_file(store, f, "gsm8k", "g", "t")
    assert (rep.read, rep.added) == (3, 3)
    qs = [p["question"] for p in store.problems("g", "t")]
    assert not qs[0].startswith("\ufeff") and qs[2] == rec["question"]


def test_map_needs_generic_and_composes_fields(store, tmp_path):
    f = _write(tmp_path / "mc.jsonl", [
        json.dumps({"body": "A box holds 3 pens.", "ask": "How many pens in 2 boxes?",
                    "options": [5, "6", 7.0], "gold": 6.0}),
        json.dumps({"body": "Ann has 2 cats.", "ask": "How many cats?",
                    "options": {"A": "two", "B": "three"}, "gold": "A"})])
    r = CliRunner().invoke(cli, ["--db", str(store.path), "data", "import", str(f), "--format",
                                 "gsm8k", "--dataset", "d", "--split", "s", "--map", "question=q"])
    assert r.exit_code == 1 and "--map applies to --format generic only" in r.output
    r = CliRunner().invoke(cli, ["--db", str(store.path), "data", "import", str(f), "--format",
                                 "generic", "--dataset", "d", "--split", "s", "--map",
                                 "question=body+ask+options,answer=gold"])
    assert r.exit_code == 0, r.output
    p = store.problems("d", "s")
    assert [x["question"] for x in p] == [
        "A box holds 3 pens. How many pens in 2 boxes?\n(A) 5\n(B) 6\n(C) 7",
        "Ann has 2 cats. How many cats?\n(A) two\n(B) three"]
    assert [x["answer"] for x in p] == ["6", "A"]
    for spec, err in (("question=body", "lacks ['answer']"),
                      ("question=body,answer=gold+ask", "answer names one field"),
                      ("questoin=body,answer=gold", "unknown field(s) ['questoin']"),
                      ("question=body+,answer=gold", "bad item")):
        r = CliRunner().invoke(cli, ["--db", str(store.path), "data", "import", str(f),
                                     "--format", "generic", "--dataset", "d", "--split", "t",
                                     "--map", spec])
        assert r.exit_code == 1 and err in r.output, (spec, r.output)
    assert store.count("problems") == 2


def _read_only(paths, on: bool):
    """Make files unwritable for this user: chmod for a normal user; for root, which
    ignores modes, the immutable attribute."""
    for p in paths:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i" if on else "-i", str(p)], check=True)
        else:
            p.chmod((0o555 if p.is_dir() else 0o444) if on else 0o755)


@pytest.mark.slow
def test_a_store_the_user_cannot_write_still_opens_for_reading(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    db = d / "sei.duckdb"
    import_demo(Store(db), 5, 2)
    old = tmp_path / "old"
    old.mkdir()
    _legacy_store(old / "sei.duckdb", 1)  # a store left at schema v1
    locked = [db, d, old / "sei.duckdb", old]
    _read_only(locked, True)
    try:
        assert not os.access(db, os.W_OK)
        env = dict(os.environ, SEI_DB=str(db))
        cmd = [sys.executable, "-m", "pipeline.shells.cli"]
        for args in (["data", "list"], ["runs"], ["jobs", "list"]):
            r = subprocess.run(cmd + args, capture_output=True, text=True, env=env, cwd=ROOT)
            assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)
        r = subprocess.run(cmd + ["data", "list"], capture_output=True, text=True, env=env,
                           cwd=ROOT)
        assert "demo" in r.stdout and "5" in r.stdout
        r = subprocess.run(cmd + ["data", "demo", "--n", "3", "--n-test", "1"], env=env,
                           capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert f"Error: {db} is read-only for this user; reading works" in r.stderr
        r = subprocess.run(cmd + ["runs"], capture_output=True, text=True, cwd=ROOT,
                           env=dict(os.environ, SEI_DB=str(old / "sei.duckdb")))
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert f"has schema v1 and needs migrating to v{SCHEMA_VERSION}" in r.stderr
    finally:
        _read_only(locked, False)
    assert Store(db).count("problems") == 7
