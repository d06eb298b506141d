"""Noise made visible and usable, and search (issue 22, items 2 and 3), on the real
clustered store: real DuckDB, real MiniLM embeddings, real UMAP/HDBSCAN."""

import json
import re

import numpy as np
from click.testing import CliRunner

from pipeline.analysis import taxonomy
from pipeline.models.embed import MODEL_NAME
from pipeline.shells.cli import cli
from pipeline.stages.cluster import ClusterParams, cluster


def noisy(store, need_only_noise: bool = False) -> ClusterParams:
    """Parameters of a clustering of the store with noise (and, if asked, bad cases
    reached by no type): the fixture's own, else coarser ones."""
    p = ClusterParams(min_cluster_size=4)
    for mcs in (4, 8, 12, 16, 24):
        if mcs != 4:
            p = ClusterParams(min_cluster_size=mcs)
            cluster(store, p)
        nz = taxonomy.noise(taxonomy.current(store))
        if nz["kp_ids"] and (nz["only_noise"] or not need_only_noise):
            return p
    raise AssertionError("no clustering of the test store leaves noise")


def expected_nearest(store, tax) -> dict[int, int]:
    """Noise keyphrase -> the type whose centroid is nearest, computed here with numpy
    from the cached embeddings (not through pipeline.analysis.taxonomy)."""
    texts = sorted({p["text"] for p in tax.points})
    vec = {t: np.asarray(v, float) for t, v in store.embeddings_get(MODEL_NAME, texts).items()}
    assert len(vec) == len(texts)  # clustering cached every keyphrase's embedding
    members: dict[int, list[np.ndarray]] = {}
    for p in tax.points:
        if p["type"] is not None and not p["excluded"]:
            members.setdefault(p["type"], []).append(vec[p["text"]])
    cents = {t: np.mean(v, 0) / np.linalg.norm(np.mean(v, 0)) for t, v in members.items()}
    out = {}
    for p in tax.points:
        if p["type"] is None and not p["excluded"]:
            x = vec[p["text"]] / np.linalg.norm(vec[p["text"]])
            out[p["kp_id"]] = max(cents, key=lambda t: float(x @ cents[t]))
    return out


def test_noise_is_counted_assigned_to_the_nearest_type_undone_and_survives(clustered):
    p = noisy(clustered)
    cl = clustered.latest_clustering()
    stored = [r["kp_id"] for r in clustered.cluster_points(cl["clustering_id"])
              if r["type_id"] is None]
    tax = taxonomy.current(clustered)
    nz = taxonomy.noise(tax)
    assert sorted(nz["kp_ids"]) == sorted(stored) and stored
    cases = {r["case_id"] for r in clustered.cluster_points(cl["clustering_id"])
             if r["type_id"] is None}
    r = CliRunner().invoke(cli, ["types", "list"])
    assert r.exit_code == 0, r.output
    assert f"{len(stored)} unassigned keyphrases in {len(cases)} bad cases" in r.output
    r = CliRunner().invoke(cli, ["types", "noise"])
    assert r.exit_code == 0 and all(f"[{k}]" in r.output for k in stored), r.output

    want = expected_nearest(clustered, tax)
    r = CliRunner().invoke(cli, ["types", "assign-noise"])
    assert r.exit_code == 0, r.output
    assert f"assigned {len(stored)} keyphrases" in r.output
    assert clustered.edits()[-1]["op"] == "assign_noise"

    def check(tx):
        got = {k: tx.by_kp()[k]["type"] for k in want}
        assert got == want
        assert not taxonomy.noise(tx)["kp_ids"]

    check(taxonomy.current(clustered))
    taxonomy.undo(clustered)
    assert sorted(taxonomy.noise(taxonomy.current(clustered))["kp_ids"]) == sorted(stored)
    taxonomy.redo(clustered)
    check(taxonomy.current(clustered))
    # A re-clustering keeps the edit as it keeps a move: the keyphrases stay where it put
    # them; an undo after it gives them back to the new clustering's noise.
    cluster(clustered, p)
    check(taxonomy.current(clustered))
    taxonomy.undo(clustered)
    after = taxonomy.current(clustered)
    assert {k for k in want if after.by_kp()[k]["type"] is None} == set(stored)
    log = taxonomy.edit_log(clustered)
    assert any("left as noise to their nearest types" in e["what"] for e in log)


def test_assign_noise_leaves_what_is_below_the_floor(clustered):
    noisy(clustered)
    n = len(taxonomy.noise(taxonomy.current(clustered))["kp_ids"])
    out = taxonomy.assign_noise(clustered, min_similarity=1.01)  # nothing is that similar
    assert out == {"edit_id": None, "assigned": 0, "left": n, "types": []}
    assert len(taxonomy.noise(taxonomy.current(clustered))["kp_ids"]) == n


def test_synthesis_reports_the_bad_cases_it_cannot_reach(clustered):
    from pipeline.stages.synthesize import SynthParams, estimate, synthesize

    noisy(clustered, need_only_noise=True)
    only = taxonomy.noise(taxonomy.current(clustered))["only_noise"]
    p = SynthParams(budget=4, per_call=2, synthesizer="offline")
    est = estimate(clustered, p)
    assert est["unreached"] == len(only) and "only unassigned (noise)" in est["unreached_why"][0]
    out = synthesize(clustered, p)
    un = out["unreached"]
    assert un["by_reason"]["noise"] == len(only) and un["case_ids"]["noise"] == only
    assert un["n"] == len(only) and f"{len(only)} bad cases have only unassigned" in un["why"][0]
    reached = {c for t in clustered.iteration(1)["taxonomy"]["types"] for c in t["case_ids"]}
    assert not reached & set(only)  # indeed no type of the frozen taxonomy holds them


# Rewordings of the offline analyzer's keyphrases: the same error said in other words.
PARAPHRASES = [
    (r"^used (\w+) instead of (\w+) on (\S+) and (\S+)$",
     "applied {0} where {1} was needed, with the numbers {2} and {3}"),
    (r"^(\w+) error: (\S+) given as (\S+) instead of (\S+)$",
     "the {0} {1} was computed as {2} while the right value is {3}"),
    (r"^final answer copies the given quantity (\S+) from the question$",
     "the answer just repeats the number {0} that the problem states"),
]


def paraphrase(texts: list[str]) -> tuple[str, str]:
    """A keyphrase of the store that appears once, and a rewording of it."""
    once = [t for t in dict.fromkeys(texts) if texts.count(t) == 1]
    for pat, tpl in PARAPHRASES:
        for t in once:
            m = re.match(pat, t)
            if m:
                return t, tpl.format(*m.groups())
    raise AssertionError(f"no keyphrase to reword among {once[:10]}")


def test_sei_search_by_words_and_by_meaning(clustered):
    tax = taxonomy.current(clustered)
    texts = [p["text"] for p in tax.points]
    word = max(re.findall(r"[a-z]{5,}", texts[0]), key=len)
    r = CliRunner().invoke(cli, ["search", word.upper(), "--limit", "500", "--json"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output[r.output.index("{"):])
    assert hits["keyphrases"] and all(word in k["text"].lower() for k in hits["keyphrases"])
    assert len(hits["keyphrases"]) == sum(word in t.lower() for t in texts)  # all found
    assert {c["case_id"] for c in hits["cases"]} >= {k["case_id"] for k in hits["keyphrases"]}
    by = tax.by_kp()
    for k in hits["keyphrases"]:  # each with its type
        t = by[k["kp_id"]]["type"]
        assert k["type"] == (tax.types[t].title if t is not None else "unassigned (noise)")

    source, reworded = paraphrase(texts)
    assert reworded.lower() not in {t.lower() for t in texts}
    r = CliRunner().invoke(cli, ["search", reworded, "--limit", "5"])
    assert r.exit_code == 0, r.output
    near = r.output.split("keyphrases nearest in meaning:")[1].strip().splitlines()
    assert source in near[0], (reworded, near)


def _app(name: str):
    import sys

    from streamlit.testing.v1 import AppTest

    from pipeline.core.config import ROOT

    sys.path.insert(0, str(ROOT / "dashboard"))
    at = AppTest.from_file(str(ROOT / "dashboard" / "pages" / name), default_timeout=180)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_error_map_shows_noise_assigns_it_and_marks_search_hits(clustered):
    noisy(clustered)
    cl = clustered.latest_clustering()
    pts = clustered.cluster_points(cl["clustering_id"])
    n_kp = sum(r["type_id"] is None for r in pts)
    n_cases = len({r["case_id"] for r in pts if r["type_id"] is None})
    at = _app("2_Error_map.py")
    assert any(e.label.startswith(f"{n_kp} unassigned keyphrases (noise) in {n_cases} bad cases")
               for e in at.expander)
    legend = at.dataframe[0].value  # the types table has a noise row with the same counts
    row = legend[legend["title"] == "unassigned (noise)"].iloc[0]
    assert (row["keyphrases"], row["cases"]) == (n_kp, n_cases)
    assert len(_df(at, "noise only")) == n_kp

    tax = taxonomy.current(clustered)
    word = max(re.findall(r"[a-z]{5,}", tax.points[0]["text"]), key=len)
    at.text_input(key="map_search").set_value(word).run()
    assert not at.exception, [e.value for e in at.exception]
    from test_dashboard import map_fig  # the figure as the map component holds it

    fig = map_fig(at)
    ring = next(tr for tr in fig["data"] if tr["name"] == "search hits")
    marked = set(np.asarray(_array(ring["customdata"])).astype(int).tolist())
    expect = {p["kp_id"] for p in tax.points if word in p["text"].lower()}
    dots = {d["kp_id"]: set(d["kp_ids"]) for d in taxonomy.dots(tax)}
    assert all(dots[m] & (expect | _meaning_ids(at)) for m in marked)
    assert all(any(k in dots[m] for m in marked) for k in expect)  # every word hit marked

    at.button(key="assign_noise").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not taxonomy.noise(taxonomy.current(clustered))["kp_ids"]
    assert clustered.edits()[-1]["op"] == "assign_noise"
    assert not any("unassigned keyphrases (noise)" in e.label for e in at.expander)


def _df(at, column: str):
    """The page's table that has this column."""
    return next(d.value for d in at.dataframe if column in getattr(d.value, "columns", ()))


def _array(v):
    """A plotly JSON array: a list, or numpy's typed-array form {dtype, bdata}."""
    import base64

    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v)


def _meaning_ids(at) -> set[int]:
    df = _df(at, "found")
    return set(df["kp_id"].astype(int))


def test_bad_cases_search_and_nearest_cases(clustered):
    tax = taxonomy.current(clustered)
    case = tax.points[0]["case_id"]
    at = _app("1_Bad_cases.py")
    at.query_params["case"] = str(case)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    near = _df(at, "score")
    assert len(near) == 5 and case not in set(near["case_id"])
    assert list(near["score"]) == sorted(near["score"], reverse=True)
    # the same five, computed here with numpy: cosine of mean keyphrase embeddings
    texts = sorted({p["text"] for p in tax.points})
    vec = {t: np.asarray(v) for t, v in clustered.embeddings_get(MODEL_NAME, texts).items()}
    per: dict[int, list] = {}
    for p in tax.points:
        per.setdefault(p["case_id"], []).append(vec[p["text"]])
    mean = {c: np.mean(v, 0) / np.linalg.norm(np.mean(v, 0)) for c, v in per.items()}
    sims = sorted((float(mean[c] @ mean[case]) for c in mean if c != case), reverse=True)
    assert np.allclose(sorted(near["score"], reverse=True), sims[:5], atol=1e-3)
    mine = [p["text"] for p in tax.points if p["case_id"] == case]
    word = max(re.findall(r"[a-z]{5,}", mine[0]), key=len)
    at.text_input(key="f_search").set_value(word).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(c.value.startswith(f"Search “{word}”") for c in at.caption)
