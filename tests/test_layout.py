"""The layering the README promises, checked on the source: the folders of pipeline/ are
the layers (a module imports its folder and those below), SQL lives only in
pipeline/storage/store.py (and the schema's steps in migrations.py), and the pipeline never
imports the dashboard."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SQL_HOME = {"pipeline/storage/store.py", "pipeline/storage/migrations.py"}

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
    assert not found, ("SQL outside pipeline/storage/store.py and migrations.py (add a Store "
                       "method):\n" + "\n".join(found))


def test_the_store_itself_is_seen_as_sql():
    """The scanner is not blind: store.py's queries are found."""
    assert len(sql_in(ROOT / "pipeline" / "storage" / "store.py")) > 20


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
    from pipeline.shells.cli import cli

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


def test_no_function_in_the_pipeline_or_the_app_is_longer_than_60_lines():
    """Long functions are split into named steps before they are copied into new stages
    (the app's pages and helpers too: a page's part is a function named for what it draws)."""
    MAX = 60
    long = []
    for rel, path in _sources("pipeline", "dashboard"):
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
                "OneShot", "Proxy", "RandomPick", "AllPick", "InstructorAnalyzer",
                "OfflineAnalyzer", "HDBSCANClusterer", "KMeansClusterer", "LLMClusterer",
                "InstructorTitler", "OfflineTitler"}
    found = []
    for rel, path in _sources("pipeline"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                if names & concrete:
                    found.append(f"{rel}:{node.lineno} {sorted(names & concrete)}")
    assert not found, found


# -- the import graph: the layers are folders, bottom to top; no circle ----------------------
# A module may import its own folder and the folders below it, never one above. A stage is a
# module named by its verb; it runs with the parameters it is given (model and adapter
# included, resolved by pipeline/loop/resolve.py) and never asks the loop.
LAYERS = ["core", "storage", "problems", "models", "analysis", "stages", "loop", "shells"]
STAGE_MODULES = {"stages." + m for m in ("extract", "analyze", "cluster", "synthesize",
                                         "select", "train", "evaluate")}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """"folder.module" -> the pipeline modules it imports (at the top or inside a function),
    each as "folder.module" ("folder" alone for the folder's __init__)."""
    def name(path: Path) -> str:
        parts = path.relative_to(root / "pipeline").with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "pipeline"

    mods = {name(p): p for p in sorted((root / "pipeline").rglob("*.py"))}

    def known(dotted: str) -> str | None:  # "pipeline.a.b.C" -> the longest module it names
        parts = dotted.split(".")[1:]
        for k in range(len(parts), 0, -1):
            if ".".join(parts[:k]) in mods:
                return ".".join(parts[:k])
        return None

    graph = {}
    for m, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
                for a in node.names:  # `from pipeline.loop import jobs`: a module, or a name
                    deps.add(known(f"{node.module}.{a.name}") or known(node.module))
            elif isinstance(node, ast.Import):
                deps |= {known(a.name) for a in node.names if a.name.startswith("pipeline.")}
        graph[m] = {d for d in deps if d} - {m}
    return graph


def layer(m: str) -> int:
    """The module's folder's place in LAYERS (-1: a module outside every layer folder)."""
    folder = m.split(".")[0]
    return LAYERS.index(folder) if folder in LAYERS else -1


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
    """Imports against the layering: a folder importing a folder above it."""
    return sorted(f"{m} -> {d}" for m, ds in graph.items() for d in ds if layer(d) > layer(m))


def test_the_folders_are_the_layers_with_no_circle_and_no_arrow_back_up():
    graph = import_graph()
    # every module lives in a layer folder (only the package's own __init__ above them)
    assert sorted(m for m in graph if layer(m) < 0) == ["pipeline"], graph.keys()
    assert {m.split(".")[0] for m in graph} - {"pipeline"} == set(LAYERS)
    assert STAGE_MODULES <= set(graph), "a stage module is lost"
    for folder in LAYERS:  # each folder says what belongs there and what it may import
        assert ast.get_docstring(ast.parse((ROOT / "pipeline" / folder / "__init__.py")
                                           .read_text("utf-8"))), folder
    assert not circles(graph), circles(graph)
    assert not arrows_up(graph), arrows_up(graph)


def test_the_import_check_sees_a_planted_circle_and_an_arrow_up(tmp_path):
    for name, body in {"core/a": "from pipeline.core import b\n",
                       "core/b": "def f():\n    import pipeline.core.a\n",
                       "stages/select": "from pipeline.loop.iterate import x\n",
                       "loop/iterate": "", "loop/__init__": "", "core/__init__": "",
                       "stages/__init__": "", "__init__": ""}.items():
        (tmp_path / "pipeline" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pipeline" / f"{name}.py").write_text(body)
    graph = import_graph(tmp_path)
    assert circles(graph) == [["core.a", "core.b", "core.a"]]
    assert arrows_up(graph) == ["stages.select -> loop.iterate"]


def test_the_readme_layout_table_names_every_module():
    readme = (ROOT / "docs" / "layout.md").read_text("utf-8")
    named = set(re.findall(r"\]\(\.\./((?:pipeline|dashboard)/[\w/]+\.py)\)", readme))
    have = {rel for rel, _ in _sources("pipeline")} | {
        rel.replace("\\", "/") for rel, _ in _sources("dashboard")}
    assert not have - named, f"modules missing from docs/layout.md: {sorted(have - named)}"
    assert not named - have, f"docs/layout.md names modules that are gone: {sorted(named - have)}"


def test_every_target_backend_is_a_target():
    """The local model, a server and the tests' scripted target all offer the Target
    protocol, each method with the protocol's parameters (a backend that drops on_done
    would silently lose mid-batch progress)."""
    import inspect

    from scripted_target import ScriptedTarget

    from pipeline.models.target import LocalTarget, OpenAITarget, Target

    backends = [LocalTarget(), OpenAITarget(model="m", base_url="http://127.0.0.1:9"),
                ScriptedTarget()]
    methods = [n for n, v in vars(Target).items() if callable(v) and not n.startswith("_")]
    assert {"generate", "load", "identity", "answer_logliks"} <= set(methods)
    for t in backends:
        assert isinstance(t, Target), type(t).__name__
        for n in methods:
            want = list(inspect.signature(getattr(Target, n)).parameters)
            assert list(inspect.signature(getattr(type(t), n)).parameters) == want, \
                (type(t).__name__, n)


def test_each_swappable_piece_comes_from_its_one_factory(monkeypatch):
    """Analyzer, clusterer and titler: one factory each, picking by setting (no string
    switch at the call sites), each piece named in the provenance it writes."""
    import numpy as np

    from pipeline.analysis.titles import make_titler
    from pipeline.models.instructor import Instructor
    from pipeline.stages.analyze import make_analyzer
    from pipeline.stages.cluster import CLUSTERERS, ClusterParams, make_clusterer

    monkeypatch.delenv("SEI_INSTRUCTOR_MODEL", raising=False)
    ins = Instructor(model="some-llm", base_url="http://127.0.0.1:9/v1")
    assert make_analyzer(None).name == "offline-analyzer-v1"  # none configured
    assert make_analyzer("offline").prompt_version is None
    a = make_analyzer({"model": "some-llm", "base_url": "http://127.0.0.1:9/v1"})
    assert (a.name, a.prompt_version, a.retry_helps) == (ins.name, "keyphrases_v1", True)
    assert make_titler("auto").name == "offline-titler-v1"
    assert make_titler("auto", ins).name == ins.name
    assert set(CLUSTERERS) == set(ClusterParams.choices("method"))  # every method registered
    rng = np.random.default_rng(0)  # two tight blobs far apart, 10 points each
    z = np.vstack([rng.normal(0, 0.05, (10, 2)), rng.normal(5, 0.05, (10, 2))])
    for method in ("hdbscan", "kmeans"):
        c = make_clusterer(ClusterParams(method=method, min_cluster_size=3, k=2))
        lab, prob, named, _ = c.labels(None, [], z, lambda *a: None)
        assert c.on_map and c.name == method and named is None
        assert len(set(lab[:10])) == len(set(lab[10:])) == 1 and -1 != lab[0] != lab[10], lab
    with pytest.raises(ValueError, match="needs an instructor"):
        make_clusterer(ClusterParams(method="llm"))
    assert not make_clusterer(ClusterParams(method="llm"), ins).on_map
