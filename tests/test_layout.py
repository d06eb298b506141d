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


# -- the import graph: stages below the loop, shells on top, no circle -------------------------
# A stage is a module named by its verb; it runs with the parameters it is given (model
# and adapter included, resolved by pipeline/resolve.py) and never asks the loop.
STAGE_MODULES = {"extract", "keyphrases", "cluster", "synthesize", "select", "train",
                 "evaluate"}
ORCHESTRATION = {"stages", "jobs", "loop", "presets", "costs", "resolve", "views"}
SHELLS = {"cli", "cli_base", "cli_loop", "serve"}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the pipeline modules it imports, at the top or inside a function."""
    mods = {p.stem for p in (root / "pipeline").glob("*.py")}
    graph = {}
    for m in mods:
        deps = set()
        for node in ast.walk(ast.parse((root / "pipeline" / f"{m}.py").read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "pipeline":
                deps |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names
                         if a.name.startswith("pipeline.")}
        graph[m] = deps - {m}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle once, as the path that closes it (depth-first search)."""
    found, state = [], {}

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                found.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def arrows_up(graph: dict[str, set[str]]) -> list[str]:
    """Imports against the layering: foundation < stages < orchestration < shells."""
    def layer(m):
        return (3 if m in SHELLS else 2 if m in ORCHESTRATION else 1 if m in STAGE_MODULES
                else 0)
    return sorted(f"{m} -> {d}" for m, ds in graph.items() for d in ds
                  if layer(d) > layer(m))


def test_the_import_graph_has_no_circle_and_no_arrow_back_up():
    graph = import_graph()
    assert STAGE_MODULES | ORCHESTRATION | SHELLS <= set(graph), "a layer names a lost module"
    assert not circles(graph), circles(graph)
    assert not arrows_up(graph), arrows_up(graph)
    # no stage asks the loop (or its bookkeeping) which model to use
    assert not {d for m in STAGE_MODULES for d in graph[m]} & {"loop", "resolve", "stages",
                                                                 "iterations", "jobs"}


def test_the_import_check_sees_a_planted_circle_and_an_arrow_up(tmp_path):
    (tmp_path / "pipeline").mkdir()
    for name, body in {"a": "from pipeline import b\n", "b": "def f():\n    import pipeline.a\n",
                       "select": "from pipeline.loop import x\n", "loop": ""}.items():
        (tmp_path / "pipeline" / f"{name}.py").write_text(body)
    graph = import_graph(tmp_path)
    assert circles(graph) == [["a", "b", "a"]]
    assert arrows_up(graph) == ["select -> loop"]


def test_the_readme_layout_table_names_every_module():
    readme = (ROOT / "docs" / "layout.md").read_text("utf-8")
    named = set(re.findall(r"\]\(\.\./((?:pipeline|dashboard)/[\w/]+\.py)\)", readme))
    have = {rel for rel, _ in _sources("pipeline")} | {
        rel.replace("\\", "/") for rel, _ in _sources("dashboard")}
    assert not have - named, f"modules missing from docs/layout.md: {sorted(have - named)}"
    assert not named - have, f"docs/layout.md names modules that are gone: {sorted(named - have)}"
