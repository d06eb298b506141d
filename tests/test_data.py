"""Store, migrations and importers on the real benchmark files."""

import json

import duckdb
import pytest
from click.testing import CliRunner

from pipeline.answers import answers_equal, extract_answer
from pipeline.cli import cli
from pipeline.data import ImportError_, import_demo, import_file
from pipeline.store import MIGRATIONS, SCHEMA_VERSION, Store

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
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_version (version INTEGER)")
    con.execute(MIGRATIONS[0])
    con.execute("INSERT INTO schema_version VALUES (1)")
    con.execute("INSERT INTO problems (dataset, split, pid, question, answer) "
                "VALUES ('d', 's', '1', 'q', '2')")
    con.close()
    s = Store(db)
    assert s.migrate() == SCHEMA_VERSION
    assert s.migrate() == SCHEMA_VERSION
    assert s.version() == SCHEMA_VERSION
    assert s.count("problems") == 1
    assert s.count("jobs") == 0


@pytest.mark.parametrize("rel,fmt,n", FILES)
def test_import_real_files(store, bench, rel, fmt, n):
    read, added = import_file(store, bench / rel, fmt, rel.split("/")[0], rel.split("/")[1][:-6])
    assert (read, added) == (n, n)
    rows = store.problems(rel.split("/")[0], rel.split("/")[1][:-6])
    assert len(rows) == n
    assert all(r["source_file"].endswith(rel) and r["source_line"] >= 1 for r in rows)
    # Every reference answer extracts and judges equal to itself.
    bad = [r["pid"] for r in rows if not answers_equal(r["answer"], r["answer"])]
    assert bad == [], f"{len(bad)} answers not equal to themselves, e.g. {bad[:5]}"
    if fmt == "gsm8k":
        # ... and the '####' line of each reference solution extracts to the answer.
        for r in rows[:300]:
            pred, method = extract_answer(r["solution"])
            assert method == "####" and answers_equal(pred, r["answer"]), r["pid"]
    # Importing again adds nothing.
    assert import_file(store, bench / rel, fmt, rel.split("/")[0], rel.split("/")[1][:-6])[1] == 0


def test_malformed_jsonl_names_line_and_writes_nothing(store, bench, tmp_path):
    import_file(store, bench / "svamp/test.jsonl", "svamp", "svamp", "test")
    before = store.count("problems")
    lines = (bench / "gsm8k/test.jsonl").read_text().splitlines()[:10]
    lines[6] = lines[6][:40]  # cut a record in half
    bad = tmp_path / "broken.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportError_, match=r"broken\.jsonl:7: not valid JSON"):
        import_file(store, bad, "gsm8k", "gsm8k", "test")
    assert store.count("problems") == before

    lines = (bench / "gsm8k/test.jsonl").read_text().splitlines()[:5]
    rec = json.loads(lines[3])
    rec["answer"] = rec["answer"].split("####")[0]
    lines[3] = json.dumps(rec)
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportError_, match=r"broken\.jsonl:4: .*####"):
        import_file(store, bad, "gsm8k", "gsm8k", "test")
    assert store.count("problems") == before

    # Through the CLI: a clear message, non-zero exit, the store unchanged.
    r = CliRunner().invoke(cli, ["--db", str(store.path), "data", "import", str(bad),
                                 "--format", "gsm8k", "--dataset", "g", "--split", "t"])
    assert r.exit_code != 0 and "broken.jsonl:4" in r.output and "nothing was imported" in r.output
    assert store.count("problems") == before


def test_generic_mapping(store, bench):
    n, added = import_file(store, bench / "svamp/test.jsonl", "generic", "svamp_g", "test",
                           {"question": "Body", "answer": "Answer", "pid": "ID"})
    assert n == added == 1000
    with pytest.raises(ImportError_, match=r"test\.jsonl:1: missing or bad field 'nope'"):
        import_file(store, bench / "svamp/test.jsonl", "generic", "x", "y",
                    {"question": "nope", "answer": "Answer"})


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
    assert "demo" in r.output and "30" in r.output and "10" in r.output
