"""LLM clustering (issue 22, item 1): the instructor names types from a sample of
keyphrases and assigns the rest in batches, through a real local HTTP server that plays
the instructor (tests/instructor_server.py, which groups keyphrases by first word). The
result is a clustering like any other: points on the map, types with the instructor's
names, lineage against the previous clustering, and a comparison with HDBSCAN."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from click.testing import CliRunner
from instructor_server import TaxonomistServer, word

from pipeline.analysis import taxonomy
from pipeline.models.instructor import Instructor
from pipeline.shells.cli import cli
from pipeline.stages.cluster import ClusterParams, agreement, cluster

P = ClusterParams(method="llm", llm_sample=20, llm_batch=15)


def groups_of(store, clustering_id):
    """Keyphrase texts per cluster label, as stored."""
    g = defaultdict(set)
    for r in store.cluster_points(clustering_id):
        g[r["cluster"]].add(r["text"])
    return g


def test_llm_clustering_is_the_instructors_grouping_and_reruns_from_cache(clustered):
    before = taxonomy.current_clustering(clustered)
    texts = {r["text"] for r in clustered.cluster_points(before["clustering_id"])}
    words = {word(t) for t in texts}
    assert len(texts) >= 30 and len(words) >= 3  # enough to need several batches and types
    with TaxonomistServer() as srv:
        ins = Instructor(model="taxonomist", base_url=srv.url)
        meta = cluster(clustered, P, instructor=ins)
        n_req = len(srv.requests)
        # One proposal from a sample of 20 distinct texts, then every distinct text
        # assigned exactly once, in batches of at most 15.
        assert [r["kind"] for r in srv.requests] == \
            ["propose"] + ["assign"] * (n_req - 1)
        assert len(srv.requests[0]["keyphrases"]) == 20
        assigned = [t for r in srv.requests[1:] for t in r["keyphrases"]]
        assert sorted(assigned) == sorted(texts)
        assert max(len(r["keyphrases"]) for r in srv.requests[1:]) == 15
        again = cluster(clustered, P, instructor=ins)
        assert len(srv.requests) == n_req  # every reply came from the cache
    assert meta["method"] == "llm" and meta["timings"]["llm_unassigned_texts"] == 0
    assert meta["timings"]["instructor"] == ins.name
    # The stored clusters are exactly the server's groups (by first word), no noise.
    g = groups_of(clustered, meta["clustering_id"])
    assert -1 not in g
    assert sorted(map(sorted, g.values())) == sorted(
        sorted(t for t in texts if word(t) == w) for w in words)
    assert groups_of(clustered, again["clustering_id"]) == g
    # Types carry the instructor's names; the map has every point; lineage ran.
    tax = taxonomy.current(clustered)
    assert tax.clustering["clustering_id"] == again["clustering_id"]
    assert len(tax.points) == len(clustered.cluster_points(before["clustering_id"]))
    # New types are titled by the instructor's names for them.
    assert meta["diff"]["new"]
    types = clustered.error_types()
    for n in meta["diff"]["new"]:
        assert types[n["type_id"]]["title"].endswith(" errors")
        assert types[n["type_id"]]["titled_by"] == ins.name
    assert meta["diff"]["previous"] == before["clustering_id"]


def test_a_reply_that_skips_a_keyphrase_is_asked_again(clustered):
    with TaxonomistServer(skip="once") as srv:
        meta = cluster(clustered, P, instructor=Instructor(model="t", base_url=srv.url))
        assigns = [r for r in srv.requests if r["kind"] == "assign"]
    first = assigns[:-1]
    assert len(first) >= 2
    # each first-pass batch lost its last keyphrase; one more request asked for all of them
    assert assigns[-1]["keyphrases"] == [r["keyphrases"][-1] for r in first]
    assert meta["timings"]["llm_unassigned_texts"] == 0
    assert -1 not in groups_of(clustered, meta["clustering_id"])


def test_what_is_still_unassigned_after_asking_again_is_counted_noise(clustered):
    with TaxonomistServer(skip="always") as srv:
        meta = cluster(clustered, P, instructor=Instructor(model="t", base_url=srv.url))
        assigns = [r for r in srv.requests if r["kind"] == "assign"]
    lost = {assigns[-1]["keyphrases"][-1]}  # the retry's own last one stays out
    g = groups_of(clustered, meta["clustering_id"])
    assert g[-1] == lost
    assert meta["timings"]["llm_unassigned_texts"] == 1


def test_without_an_instructor_llm_clustering_is_refused(clustered, monkeypatch):
    for k in ("SEI_INSTRUCTOR_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    n = len(clustered.clusterings())
    with pytest.raises(ValueError, match="--method llm needs an instructor model"):
        cluster(clustered, P)
    assert len(clustered.clusterings()) == n
    r = CliRunner().invoke(cli, ["--db", str(clustered.path), "cluster", "--method", "llm"])
    assert r.exit_code != 0 and "needs an instructor model" in r.output


def test_cli_clusters_with_the_instructor_and_compares_with_hdbscan(clustered, monkeypatch):
    hd = taxonomy.current_clustering(clustered)["clustering_id"]
    with TaxonomistServer() as srv:
        monkeypatch.setenv("SEI_INSTRUCTOR_MODEL", "taxonomist")
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        r = CliRunner().invoke(cli, ["--db", str(clustered.path), "cluster", "--method", "llm",
                                     "--llm-batch", "25"])
        assert r.exit_code == 0, r.output
    llm = taxonomy.current_clustering(clustered)["clustering_id"]
    assert llm != hd and clustered.clusterings()[-1]["method"] == "llm"
    r = CliRunner().invoke(cli, ["--db", str(clustered.path), "types", "agreement", hd,
                                 "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    n = len(clustered.cluster_points(hd))
    assert out["shared"] == n
    assert [x["method"] for x in out["rows"]] == ["hdbscan", "llm"]
    llm_groups = groups_of(clustered, llm)
    assert out["rows"][1]["types"] == len(llm_groups) and out["rows"][1]["noise"] == 0
    assert sum(out["rows"][1]["sizes"]) == n
    hd_labels = [r["cluster"] for r in clustered.cluster_points(hd)]
    assert out["rows"][0]["noise"] == hd_labels.count(-1)
    # the index is sklearn's over the two labellings of the same keyphrases (noise one
    # group of its own): two different groupings, so below 1
    from sklearn.metrics import adjusted_rand_score
    hd_by_kp = {r["kp_id"]: r["cluster"] for r in clustered.cluster_points(hd)}
    llm_by_kp = {r["kp_id"]: r["cluster"] for r in clustered.cluster_points(llm)}
    assert set(hd_by_kp) == set(llm_by_kp) and len(hd_by_kp) == n
    kp_ids = sorted(hd_by_kp)
    want = adjusted_rand_score([hd_by_kp[k] for k in kp_ids], [llm_by_kp[k] for k in kp_ids])
    assert out["ari"] == pytest.approx(want, abs=1e-12) and want < 1
    same = agreement(clustered, llm, llm)
    assert same["ari"] == pytest.approx(1.0) and same["nmi"] == pytest.approx(1.0)
    r = CliRunner().invoke(cli, ["--db", str(clustered.path), "types", "agreement", hd])
    assert f"agreement on {n} shared keyphrases: ARI" in r.output


def test_error_map_runs_llm_clustering_as_a_job_and_compares_it(clustered, monkeypatch):
    """The re-cluster form: LLM clustering is refused in the form without an instructor;
    with one it is a job whose result the comparison table sets beside HDBSCAN's."""
    import sys

    from streamlit.testing.v1 import AppTest

    from pipeline.core.config import ROOT
    from pipeline.loop import jobs

    sys.path.insert(0, str(ROOT / "dashboard"))
    for k in ("SEI_INSTRUCTOR_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    hd = taxonomy.current_clustering(clustered)["clustering_id"]

    def page():
        return AppTest.from_file(str(ROOT / "dashboard/pages/2_Error_map.py"),
                                 default_timeout=120).run()

    at = page()
    assert not at.exception
    at.selectbox(key="rc_method").set_value("llm")
    at.button[[b.label for b in at.button].index("Re-cluster (background job)")].click().run()
    assert "LLM clustering needs an instructor model" in " ".join(e.value for e in at.error)
    assert clustered.jobs() == []
    with TaxonomistServer() as srv:
        monkeypatch.setenv("SEI_INSTRUCTOR_MODEL", "taxonomist")
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        at = page()
        at.selectbox(key="rc_method").set_value("llm")
        at.number_input(key="rc_llm_batch").set_value(30)
        at.button[[b.label for b in at.button].index("Re-cluster (background job)")].click()
        at.run()
        assert not at.exception
        [j] = clustered.jobs()
        assert j["kind"] == "cluster" and j["params"]["method"] == "llm"
        assert jobs.wait(clustered, j["job_id"], timeout=300)["status"] == "succeeded"
        assert srv.requests and srv.requests[0]["kind"] == "propose"
    llm = taxonomy.current_clustering(clustered)["clustering_id"]
    assert llm != hd
    at = page()
    assert not at.exception
    # the comparison opens on the current (llm) clustering beside the other method's
    assert at.selectbox(key="agree_a").value == llm
    assert at.selectbox(key="agree_b").value == hd
    ag = agreement(clustered, llm, hd)
    table = next(d.value for d in at.dataframe if "noise keyphrases" in d.value.columns)
    assert list(table["method"]) == ["llm", "hdbscan"]
    assert list(table["types"]) == [r["types"] for r in ag["rows"]]
    ari = next(m for m in at.metric if m.label == "adjusted Rand index")
    assert ari.value == f"{ag['ari']:.3f}"


# Every mode of the fault server (tests/fault_server.py), an unknown one being a 400, with
# what the one line must say of it.
FAULT_REASONS = {
    "429": "RateLimitError", "500": "InternalServerError",
    "nochoices": "reply has no choices", "emptychoices": "reply has no choices",
    "nullcontent": "reply has no message content", "cutbody": "JSONDecodeError",
    "cutcontent": "reply is not valid JSON for the schema",
    "deepcontent": "reply is not valid JSON for the schema",
    "wrongshape": "reply is not valid JSON for the schema", "html": "reply has no choices",
    "echo401": "AuthenticationError", "slow": "APITimeoutError",
    "unknown": "BadRequestError"}


def _fault_analyses(store, modes) -> None:
    """For each mode an analysis of six keyphrases, one carrying the mode's marker (so
    the first request of an LLM clustering of it, which names types from all six, meets
    the fault); their embeddings computed here, once."""
    from fault_server import make_bad_cases

    from pipeline.models.embed import embed

    ids = make_bad_cases(store, [f"Case {i}" for i in range(6)])
    words = ["carry", "sign", "unit", "order", "rounding", "percent"]
    texts = []
    for m in modes:
        store.upsert_analysis(f"faults-{m}", "test", None, {})
        for i, c in enumerate(ids):
            t = f"{words[i]} error in step {i}" + (f" FAULT:{m}" if i == 0 else "")
            store.record_keyphrases(f"faults-{m}", c, "test", [{"text": t}])
            texts.append(t)
    embed(store, texts)


def _error_lines(out: str) -> list[str]:
    """The lines of an output that are not its progress bars (`cluster:  20%|...`)."""
    import re

    return [x for x in out.splitlines() if x.strip() and not re.match(r"cluster:\s+\d+%\|", x)]


@pytest.mark.slow
def test_cluster_llm_turns_every_instructor_fault_into_one_line(store, monkeypatch):
    """`sei cluster --method llm` against an instructor that fails in each of the fault
    server's ways: one line with the reason and how to retry, no traceback, exit 1, no
    clustering stored, and the key nowhere. Every mode through the command in this
    process (a fault left uncaught would raise here), and one through the real `sei` in
    its own process, whose stderr would show a traceback."""
    import os
    import subprocess
    import sys

    from fault_server import FaultServer

    from pipeline.core.config import ROOT

    key = "sk-cluster-fault-0123456789abcdef"
    _fault_analyses(store, FAULT_REASONS)
    with FaultServer(slow_s=5) as srv:
        env = {"SEI_INSTRUCTOR_MODEL": "m", "OPENAI_BASE_URL": srv.base_url,
               "OPENAI_API_KEY": key, "SEI_INSTRUCTOR_TIMEOUT_S": "1",
               "SEI_INSTRUCTOR_CASE_S": "1"}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        hint = "run `sei cluster` again to retry"
        for mode, reason in FAULT_REASONS.items():
            r = CliRunner().invoke(cli, ["--db", str(store.path), "cluster", "--method", "llm",
                                         "--analysis", f"faults-{mode}"], prog_name="sei",
                                   catch_exceptions=False)
            [line] = _error_lines(r.output)
            assert r.exit_code == 1, (mode, r.output)
            assert line.startswith("Error: the instructor failed: "), (mode, line)
            assert reason in line and hint in line, (mode, line)
            assert "Traceback" not in r.output and key not in r.output, mode
        p = subprocess.run([sys.executable, "-m", "pipeline.shells.cli", "cluster",
                            "--method", "llm",
                            "--analysis", "faults-500"], capture_output=True, text=True,
                           cwd=ROOT, env=dict(os.environ, SEI_DB=str(store.path), **env),
                           timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 1 and "Traceback" not in out, out
    [line] = _error_lines(out)
    assert line.startswith("Error: the instructor failed: ") and "InternalServerError" in line
    assert hint in line and key not in out
    assert store.clusterings() == []
