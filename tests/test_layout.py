"""The layering the README promises, checked on the source: SQL lives only in
pipeline/store.py (and the schema's steps in pipeline/migrations.py), and the pipeline
never imports the dashboard."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SQL_HOME = {"pipeline/store.py", "pipeline/migrations.py"}

# Upper-case keywords in the shape of a statement, so prose ("select the rows from ...",
# "Update the title") never matches. Our SQL is written with upper-case keywords.
SQL = re.compile(
    r"\bSELECT\b[\s\S]*?\bFROM\b"
    r"|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b"
    r"|\bUPDATE\s+\w+\s+SET\b"
    r"|\bDELETE\s+FROM\b"
    r"|\b(?:CREATE|DROP|ALTER)\s+(?:OR\s+REPLACE\s+)?(?:TEMP\s+)?"
    r"(?:TABLE|VIEW|INDEX|SEQUENCE)\b"
)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (prose about SQL is allowed)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _strings(tree: ast.AST):
    """(line, text) of every string literal; an f-string is read as its literal parts."""
    docs = _docstrings(tree)
    inside_fstring = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
            inside_fstring.update(id(v) for v in node.values)
            yield node.lineno, "".join(str(p) for p in parts)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docs and id(node) not in inside_fstring):
            yield node.lineno, node.value


def sql_in(path: Path) -> list[str]:
    """`path:line: text` for each string literal in `path` that reads as SQL."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [f"{path}:{line}: {' '.join(text.split())[:80]}"
            for line, text in sorted(_strings(tree)) if SQL.search(text)]


def _sources(*dirs: str):
    for d in dirs:
        for path in sorted((ROOT / d).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path


def test_sql_lives_only_in_the_store():
    found = [hit for rel, path in _sources("pipeline", "dashboard") if rel not in SQL_HOME
             for hit in sql_in(path)]
    assert not found, ("SQL outside pipeline/store.py and migrations.py (add a Store "
                       "method):\n" + "\n".join(found))


def test_the_store_itself_is_seen_as_sql():
    """The scanner is not blind: store.py's queries are found."""
    assert len(sql_in(ROOT / "pipeline" / "store.py")) > 20


def test_the_scanner_catches_planted_sql_and_spares_prose(tmp_path):
    f = tmp_path / "planted.py"
    f.write_text('''"""Reads rows: SELECT what you need FROM the store, never here."""

def n_open(store, kind):
    """Open jobs. Select the rows from the table and update the title set."""
    note = "Select the types from the map, then UPDATE the view."
    store.rows(
        "SELECT count(*) "
        "FROM jobs WHERE status = 'open'")
    return store.scalar(f"DELETE FROM {kind} WHERE x = ?", [1]), note

def make(con):
    con.execute("CREATE TABLE IF NOT EXISTS t (a INT)")
    con.execute("UPDATE t SET a = 1")
    con.execute("INSERT INTO t VALUES (1)")
''')
    hits = sql_in(f)
    assert [h.split(":")[1] for h in hits] == ["7", "9", "12", "13", "14"], hits
    assert not any("Select the" in h or "SELECT what" in h for h in hits)


def test_the_pipeline_never_imports_the_dashboard():
    found = []
    for rel, path in _sources("pipeline"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{rel}:{node.lineno}: {n}" for n in names
                      if n == "dashboard" or n.startswith("dashboard.")]
    assert not found, "the pipeline imports the dashboard:\n" + "\n".join(found)


def _commands(cmd, path=("sei",)):
    """(path, command) for `cmd` and every command under it."""
    yield " ".join(path), cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _commands(sub, path + (name,))


def test_every_cli_command_has_a_one_line_help_and_an_example():
    from pipeline.cli import cli

    commands = dict(_commands(cli))
    assert {"sei types merge", "sei jobs wait", "sei export selection", "sei iterate"} \
        <= set(commands)
    missing = [p for p, c in commands.items() if not (c.help or "").strip()]
    assert not missing, f"commands without help: {missing}"
    no_example = [p for p, c in commands.items() if "Example: sei " not in c.help]
    assert not no_example, f"commands without an `Example: sei ...` line: {no_example}"
    # The first line is the summary `sei --help` lists: one sentence, on one line.
    long = [p for p, c in commands.items() if c.help.strip().split("\n\n")[0].count("\n")]
    assert not long, f"commands whose summary spans lines: {long}"


def test_no_function_in_the_pipeline_is_longer_than_60_lines():
    """Long functions are split into named steps before they are copied into new stages."""
    MAX = 60
    long = []
    for rel, path in _sources("pipeline"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX:
                    long.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions over {MAX} lines:\n" + "\n".join(long)


def test_no_isinstance_on_a_concrete_swappable_piece():
    """Targets, synthesizers and scorers are chosen by one factory each and used through
    their interface: nothing asks which concrete class it holds."""
    concrete = {"LocalTarget", "OpenAITarget", "OfflineSynthesizer", "InstructorSynthesizer",
                "OneShot", "Proxy", "RandomPick", "AllPick"}
    found = []
    for rel, path in _sources("pipeline"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                if names & concrete:
                    found.append(f"{rel}:{node.lineno} {sorted(names & concrete)}")
    assert not found, found
