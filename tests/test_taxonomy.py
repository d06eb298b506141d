"""Error types from real keyphrases of the real model's bad cases, and human curation as
an append-only log that survives re-clustering (real MiniLM, UMAP, HDBSCAN)."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import three_types

from pipeline.analysis import lineage, taxonomy
from pipeline.shells.cli import cli
from pipeline.stages.cluster import ClusterParams, cluster, retitle


def test_clustering_is_stored_with_params_and_types(clustered):
    cl = clustered.latest_clustering()
    assert cl["params"]["min_cluster_size"] == 4 and cl["seed"] == 0
    assert cl["embed_model"].endswith("all-MiniLM-L6-v2")
    assert set(cl["timings"]) == {"embed_s", "umap_s", "cluster_s"}
    tax = taxonomy.current(clustered)
    ts = tax.visible_types()
    assert len(ts) == cl["n_clusters"] >= 2
    n_kp = clustered.count("keyphrases")
    assert len(tax.points) == n_kp == cl["n_points"]
    # Noise stays visible as unassigned points; members + noise = all points.
    noise = [p for p in tax.points if p["type"] is None]
    assert sum(len(t.members) for t in ts) + len(noise) == n_kp
    for t in ts:
        assert t.title and t.titled_by == "offline-titler-v1" and t.description
        assert 0 < t.share <= 1 and t.n_cases >= 1 and 1 <= len(t.examples) <= 5
        assert set(t.examples) <= set(t.members)


def test_same_params_same_clusters(clustered):
    before = {p["kp_id"]: p["type_id"] for p in taxonomy.current(clustered).points}
    meta = cluster(clustered, ClusterParams(min_cluster_size=4))
    after = {p["kp_id"]: p["type_id"] for p in taxonomy.current(clustered).points}
    assert after == before  # seeded UMAP + matching: the same ids come back
    assert not meta["diff"]["new"] and not meta["diff"]["gone"]


def test_rename_merge_split_survive_reclustering_and_undo(clustered):
    ts = three_types(clustered)
    a, b, c = ts[0], ts[1], ts[-1]
    taxonomy.rename(clustered, a.type_id, "wrong final step")
    taxonomy.merge(clustered, [b.type_id, c.type_id], into=b.type_id)
    moved = a.members[:2]
    new_t = taxonomy.split(clustered, moved, "split by hand")

    def check(tx):
        assert tx.types[a.type_id].title == "wrong final step"
        assert tx.types[a.type_id].titled_by == "human"
        assert tx.types[c.type_id].merged_into == b.type_id
        members_b = set(tx.types[b.type_id].members)
        assert set(c.members) - set(moved) <= members_b | {p["kp_id"] for p in tx.points
                                                           if p["type"] is None}
        assert set(tx.types[new_t].members) == set(moved)
        assert tx.types[new_t].title == "split by hand"

    check(taxonomy.current(clustered))
    meta = cluster(clustered, ClusterParams(min_cluster_size=4))  # a fresh clustering
    assert meta["previous"]
    check(taxonomy.current(clustered))
    # Other parameters: types are re-matched by overlap/centroid and the diff is reported.
    meta = cluster(clustered, ClusterParams(min_cluster_size=6, n_neighbors=10, seed=1))
    assert set(meta["diff"]) >= {"kept", "new", "gone", "split", "merged"}
    tx = taxonomy.current(clustered)
    assert set(tx.types[new_t].members) == set(moved)  # a person's split always holds
    assert tx.types[a.type_id].title == "wrong final step"  # matched again, still renamed
    # Undo the split: its members go back to the clusters they came from.
    taxonomy.undo(clustered)
    tx = taxonomy.current(clustered)
    assert new_t not in tx.types or not tx.types[new_t].members
    assert [e["op"] for e in clustered.edits()][-1] == "undo"


def test_titled_merge_is_one_edit_and_one_undo(clustered):
    ts = taxonomy.current(clustered).visible_types()
    a, b = ts[0], ts[1]
    taxonomy.merge(clustered, [a.type_id, b.type_id], into=a.type_id, title="  both  ")
    assert [e["op"] for e in clustered.edits()] == ["merge"]
    tx = taxonomy.current(clustered)
    assert tx.types[a.type_id].title == "both" and tx.types[a.type_id].titled_by == "human"
    assert set(tx.types[a.type_id].members) == set(a.members) | set(b.members)
    taxonomy.undo(clustered)
    tx = taxonomy.current(clustered)
    assert tx.types[a.type_id].title == a.title and tx.types[b.type_id].merged_into is None
    assert set(tx.types[b.type_id].members) == set(b.members)


def test_exclude_removes_from_shares_and_is_reversible(clustered):
    tax = taxonomy.current(clustered)
    t = tax.visible_types()[0]
    taxonomy.exclude(clustered, type_id=t.type_id)
    tx = taxonomy.current(clustered)
    assert tx.types[t.type_id].excluded
    assert tx.n_cases <= tax.n_cases
    assert all(p["excluded"] for p in tx.points if p["type"] == t.type_id)
    # Shares count only bad cases that keep a non-excluded keyphrase.
    live = {p["case_id"] for p in tx.points if not p["excluded"]}
    assert tx.n_cases == len(live)
    kept = [x for x in tx.visible_types() if not x.excluded]
    assert len(kept) == len(tax.visible_types()) - 1
    for x in kept:
        cases = {p["case_id"] for p in tx.points if p["kp_id"] in set(x.members)
                 and not p["excluded"]}
        assert x.share == pytest.approx(len(cases) / len(live))
    taxonomy.exclude(clustered, type_id=t.type_id, include=True)
    assert not taxonomy.current(clustered).types[t.type_id].excluded
    with pytest.raises(ValueError, match="no error type"):
        taxonomy.rename(clustered, 10**6, "x")


def test_kmeans_variant_and_retitle(clustered):
    meta = cluster(clustered, ClusterParams(method="kmeans", k=5))
    assert meta["n_clusters"] == 5 and meta["method"] == "kmeans"
    tax = taxonomy.current(clustered)
    assert all(p["type"] is not None for p in tax.points)  # k-means has no noise
    t, u = tax.visible_types()[0], tax.visible_types()[1]
    taxonomy.rename(clustered, t.type_id, "kept by a person")
    # Stored titles gone stale (as after a change of titling method): retitle recomputes
    # those of unedited types, leaves the renamed type's stored title alone, and the view
    # still shows the person's title.
    # (Types matched to the previous clustering kept its titles, so the expected titles
    # are recomputed here from each type's members, as retitle does.)
    for x in (t, u):
        clustered.set_type_title(x.type_id, "stale title", None, "offline-analyzer-v1")
    with_members = [x for x in tax.types.values() if x.members]
    assert retitle(clustered) == len(with_members) - 1
    stored = clustered.error_types()
    assert stored[u.type_id]["title"] not in ("stale title", "kept by a person")
    assert stored[t.type_id]["title"] == "stale title"
    assert taxonomy.current(clustered).types[t.type_id].title == "kept by a person"
    # --all retitles the renamed type too, as a rename edit by the titler (the person's
    # title lives in the edit log, so a stored title could not win over it); undo gives
    # the person's title back.
    n_edits = len(clustered.edits())
    assert retitle(clustered, only_unedited=False) == len(with_members)
    now = taxonomy.current(clustered).types[t.type_id]
    assert now.title not in ("stale title", "kept by a person") and now.titled_by != "human"
    assert len(clustered.edits()) == n_edits + 1 and clustered.edits()[-1]["author"] == "retitle"

    def titles():
        return {k: v.title for k, v in taxonomy.current(clustered).types.items() if v.members}
    first = titles()
    assert retitle(clustered, only_unedited=False) == len(with_members)
    assert titles() == first  # stable
    assert first[u.type_id] == stored[u.type_id]["title"]
    taxonomy.undo(clustered)
    assert taxonomy.current(clustered).types[t.type_id].title == "kept by a person"


def _unit(i: int, dims: int = 8, eps: float = 0.0) -> np.ndarray:
    v = np.zeros(dims)
    v[i] = 1.0
    v[(i + 1) % dims] = eps
    return v / np.linalg.norm(v)


def test_matching_reports_kept_new_gone_split_and_merged():
    """Re-cluster matching on made-up assignments: type 1 kept; type 2 split in two (the
    bigger part keeps its id, the other is new); types 3 and 4 merged (the bigger overlap keeps
    its id); type 5 all noise (gone)."""
    prev = {k: 1 for k in range(1, 7)} | {k: 2 for k in range(7, 13)} | \
        {k: 3 for k in range(13, 17)} | {k: 4 for k in range(17, 22)} | \
        {k: 5 for k in range(22, 26)}
    labels = {k: 0 for k in range(1, 7)} | {7: 1, 8: 1, 9: 1, 10: 1, 11: 2, 12: 2} | \
        {k: 3 for k in range(13, 22)} | {k: -1 for k in range(22, 26)}
    emb = {k: _unit(t) for k, t in prev.items()}
    assign, diff = lineage.match(prev, labels, emb)
    assert assign == {0: 1, 1: 2, 2: None, 3: 4}
    assert diff == {
        "kept": [{"cluster": 0, "type_id": 1, "by": "overlap"},
                 {"cluster": 1, "type_id": 2, "by": "overlap"},
                 {"cluster": 3, "type_id": 4, "by": "overlap"}],
        "new": [2], "gone": [3, 5],
        "split": [{"type_id": 2, "into_clusters": [1, 2]}],
        "merged": [{"cluster": 3, "from_types": [3, 4]}]}


def test_matching_falls_back_to_centroids_for_new_members():
    """A cluster of keyphrases never seen before takes the id of the free old type whose
    centroid is close enough (cos >= 0.85), and only that one."""
    prev = {1: 7, 2: 7, 3: 7, 4: 8, 5: 8}
    labels = {1: -1, 2: -1, 3: -1, 4: -1, 5: -1, 10: 0, 11: 0, 12: 1}
    emb = {1: _unit(0), 2: _unit(0), 3: _unit(0), 4: _unit(3), 5: _unit(3),
           10: _unit(0, eps=0.2), 11: _unit(0, eps=0.3), 12: _unit(3, eps=1.0)}
    assign, diff = lineage.match(prev, labels, emb)
    assert assign == {0: 7, 1: None}  # cos(cluster 1, type 8) = 0.71 < 0.85
    assert diff["kept"] == [{"cluster": 0, "type_id": 7, "by": "centroid"}]
    assert (diff["new"], diff["gone"], diff["split"], diff["merged"]) == ([1], [8], [], [])


def test_cli_analyze_cluster_types_export(prepared, tmp_path):
    db = str(prepared.path)
    run = CliRunner()
    r = run.invoke(cli, ["--db", db, "analyze"])
    assert r.exit_code == 0, r.output
    assert "offline-analyzer-v1" in r.output
    r = run.invoke(cli, ["--db", db, "cluster", "--min-cluster-size", "4"])
    assert r.exit_code == 0, r.output
    r = run.invoke(cli, ["--db", db, "types", "list"])
    assert r.exit_code == 0, r.output
    # a line per type: its id, its share of the bad cases on the map, its keyphrases and its
    # title, as the store has them after clustering (no edits yet)
    cid = taxonomy.current_clustering(prepared)["clustering_id"]
    pts = prepared.cluster_points(cid)
    titles = {tid: e["title"] for tid, e in prepared.error_types().items()}
    n_cases = len({p["case_id"] for p in pts})
    by_type = {}
    for p in pts:
        if p["type_id"] is not None:
            by_type.setdefault(p["type_id"], []).append(p["case_id"])
    assert by_type
    head, *lines = r.output.splitlines()
    assert head.startswith(f"clustering {cid}: {len(pts)} keyphrases, {n_cases} bad cases, "), head
    got = {int(tid): (float(share.rstrip("%")), int(n), kp, title)
           for tid, share, n, kp, title in (line.split(None, 4) for line in lines)}
    assert got == {tid: (pytest.approx(100 * len(set(cases)) / n_cases, abs=0.05), len(cases),
                         "kp", titles[tid]) for tid, cases in by_type.items()}
    tid = taxonomy.current(prepared).visible_types()[0].type_id
    r = run.invoke(cli, ["--db", db, "types", "rename", str(tid), "renamed from the CLI"])
    assert r.exit_code == 0, r.output
    assert "renamed from the CLI" in run.invoke(cli, ["--db", db, "types", "show", str(tid)]).output
    r = run.invoke(cli, ["--db", db, "types", "undo"])
    assert r.exit_code == 0
    assert taxonomy.current(prepared).types[tid].title != "renamed from the CLI"
    out = tmp_path / "types.jsonl"
    r = run.invoke(cli, ["--db", db, "export", "types", "--format", "jsonl", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert {r["type_id"] for r in rows} == {t.type_id for t in
                                           taxonomy.current(prepared).visible_types()}
    assert all(r["members"] and "share" in r for r in rows)
    # Each type's bad cases with question, model output and the keyphrases of that type.
    for r in rows:
        members = {m["case_id"] for m in r["members"]}
        assert {c["case_id"] for c in r["cases"]} == members
        assert all(c["question"] and c["output"] is not None and c["keyphrases"]
                   for c in r["cases"])
    pq = tmp_path / "types.parquet"
    r = run.invoke(cli, ["--db", db, "export", "types", "--format", "parquet", "-o", str(pq)])
    assert r.exit_code == 0, r.output
    assert len(pd.read_parquet(pq)) == len(rows)


def test_subset_clustering_is_held_until_made_current_and_a_switch_undoes(clustered):
    from pipeline.stages.analyze import analyze_bad_cases

    tax0 = taxonomy.current(clustered)
    cur = tax0.clustering["clustering_id"]
    t = tax0.visible_types()[0]
    taxonomy.rename(clustered, t.type_id, "curated title")
    # A quick start on 8 problems: a new analysis of 8 bad cases, clustered.
    run = clustered.runs()[0]["run_id"]
    aid = analyze_bad_cases(clustered, run_id=run, instructor="offline", limit=8)
    meta = cluster(clustered, ClusterParams(min_cluster_size=2), analysis_id=aid)
    held = meta["diff"]["held"]
    assert held == {"n_cases": 8, "current_cases": len({p["case_id"] for p in tax0.points}),
                    "shared_cases": 8, "current": cur}
    assert taxonomy.current(clustered).clustering["clustering_id"] == cur
    assert taxonomy.current(clustered).types[t.type_id].title == "curated title"
    assert [c["clustering_id"] for c in taxonomy.held_clusterings(clustered)] == \
        [meta["clustering_id"]]
    # Made current by a person: an edit; undoing it brings the curated taxonomy back.
    taxonomy.use_clustering(clustered, meta["clustering_id"])
    now = taxonomy.current(clustered)
    assert now.clustering["clustering_id"] == meta["clustering_id"]
    assert len(now.points) == meta["n_points"] and not taxonomy.held_clusterings(clustered)
    taxonomy.undo(clustered)
    back = taxonomy.current(clustered)
    assert back.clustering["clustering_id"] == cur
    assert back.types[t.type_id].title == "curated title"
    assert {p["kp_id"] for p in back.points} == {p["kp_id"] for p in tax0.points}
    # "Keep the current one" answers the question too.
    taxonomy.use_clustering(clustered, cur)
    assert not taxonomy.held_clusterings(clustered)
    # A clustering that covers every current case becomes current by itself (cluster()
    # alone takes the latest analysis: the subset one, which is held again).
    assert "held" in cluster(clustered, ClusterParams(min_cluster_size=2))["diff"]
    run = CliRunner()
    r = run.invoke(cli, ["--db", str(clustered.path), "cluster", "--min-cluster-size", "2"])
    assert r.exit_code == 0 and f"held: it covers 8 bad cases, the current {cur}" in r.output
    r = run.invoke(cli, ["--db", str(clustered.path), "types", "clusterings"])
    lines = r.output.splitlines()
    assert next(x for x in lines if cur in x).startswith("* ")
    assert sum("[held: 8 of" in x for x in lines) == 3, r.output
    full = cluster(clustered, ClusterParams(min_cluster_size=4),
                   analysis_id=tax0.clustering["analysis_id"])
    assert "held" not in full["diff"] and full["previous"] == cur
    assert taxonomy.current(clustered).clustering["clustering_id"] == full["clustering_id"]
    with pytest.raises(ValueError, match="no clustering"):
        taxonomy.use_clustering(clustered, "cl-nope")


def test_undo_any_edit_redo_and_a_readable_log(clustered):
    ts = taxonomy.current(clustered).visible_types()
    a, b = ts[0], ts[1]
    e1 = taxonomy.rename(clustered, a.type_id, "first title")
    taxonomy.rename(clustered, b.type_id, "second title")
    taxonomy.undo(clustered, e1)  # not the latest edit
    tx = taxonomy.current(clustered)
    assert tx.types[a.type_id].title == a.title and tx.types[b.type_id].title == "second title"
    assert taxonomy.current(clustered).redoable
    taxonomy.redo(clustered)
    assert taxonomy.current(clustered).types[a.type_id].title == "first title"
    assert not taxonomy.current(clustered).redoable  # a redo is not itself redone
    with pytest.raises(ValueError, match="nothing to redo"):
        taxonomy.redo(clustered)
    taxonomy.undo(clustered)  # Undo after Redo takes back what was redone: e1
    assert taxonomy.current(clustered).types[a.type_id].title == a.title
    assert taxonomy.current(clustered).types[b.type_id].title == "second title"
    with pytest.raises(ValueError, match="not in force"):
        taxonomy.undo(clustered, e1)
    taxonomy.merge(clustered, [a.type_id, b.type_id], into=a.type_id, title="both kinds")
    log = taxonomy.edit_log(clustered, taxonomy.current(clustered))
    assert [e["edit"] for e in log] == sorted((e["edit"] for e in log), reverse=True)
    assert log[0]["what"] == (f"merged {b.type_id} “second title” into {a.type_id} "
                              "“both kinds”, titled “both kinds”")
    first = next(e for e in log if e["edit"] == e1)
    assert first["what"] == f"renamed type {a.type_id} to “first title”"
    assert not first["in force"]
    undo_rows = [e for e in log if e["op"] == "undo"]
    assert undo_rows[-1]["what"] == (f"undid edit {e1}: renamed type {a.type_id} to "
                                     "“first title”")
    # The CLI prints the same sentences, whole.
    r = CliRunner().invoke(cli, ["--db", str(clustered.path), "types", "log"])
    assert r.exit_code == 0 and log[0]["what"] in r.output, r.output


def test_duplicate_titles_are_reported(clustered):
    ts = taxonomy.current(clustered).visible_types()
    assert taxonomy.duplicate_titles(taxonomy.current(clustered)) == {}
    taxonomy.rename(clustered, ts[0].type_id, "Same Title")
    taxonomy.rename(clustered, ts[1].type_id, "same  title")
    dup = taxonomy.duplicate_titles(taxonomy.current(clustered))
    assert dup == {"same title": sorted([ts[0].type_id, ts[1].type_id])}


def test_identical_keyphrases_are_one_dot(clustered):
    tax = taxonomy.current(clustered)
    dots = taxonomy.dots(tax)
    live = [p for p in tax.points if not p["excluded"]]
    assert sorted(k for d in dots for k in d["kp_ids"]) == sorted(p["kp_id"] for p in live)
    assert len(dots) == len({(p["text"], p["type"]) for p in live})
    by = {p["kp_id"]: p for p in tax.points}
    for d in dots:
        assert {(by[k]["text"], by[k]["type"]) for k in d["kp_ids"]} == {(d["text"], d["type"])}
    big = max(dots, key=lambda d: len(d["kp_ids"]))
    assert len(big["kp_ids"]) > 1  # the real model repeats itself
    assert taxonomy.expand([big["kp_id"]], tax) == sorted(big["kp_ids"])


def test_readable_diff_against_the_curated_taxonomy(clustered):
    ts = taxonomy.current(clustered).visible_types()
    a, b = ts[0], ts[1]
    taxonomy.merge(clustered, [a.type_id, b.type_id], into=a.type_id, title="merged by hand")
    old = taxonomy.current(clustered)
    same = cluster(clustered, ClusterParams(min_cluster_size=4))
    rows = taxonomy.compare(taxonomy.current(clustered, same["previous"]),
                            taxonomy.current(clustered))
    curated = {t.type_id for t in old.visible_types() if not t.excluded}
    assert {r["type"] for r in rows} == curated  # b is part of a, as the user sees it
    assert {r["status"] for r in rows} == {"kept"}
    assert next(r for r in rows if r["type"] == a.type_id)["title"] == "merged by hand"
    other = cluster(clustered, ClusterParams(min_cluster_size=6, n_neighbors=10, seed=1))
    rows = taxonomy.compare(taxonomy.current(clustered, other["previous"]),
                            taxonomy.current(clustered))
    assert {r["type"] for r in rows if r["status"] != "new"} == curated
    assert all(r["status"] in ("kept", "kept, changed", "split", "new", "gone (noise)")
               or r["status"].startswith("now part of ") for r in rows), rows


def test_new_layout_is_drawn_in_the_previous_frame(clustered):
    import numpy as np

    from pipeline.stages.cluster import embed_and_map

    before = {p["text"]: (p["x"], p["y"]) for p in taxonomy.current(clustered).points}
    texts = list(before)
    p = ClusterParams(min_cluster_size=6, n_neighbors=10, seed=1)
    _, raw, _ = embed_and_map(clustered, texts, p, {})
    _, aligned, _ = embed_and_map(clustered, texts, p, {}, before=before)
    old = np.array([before[t] for t in texts])
    moved_raw = np.linalg.norm(raw - old, axis=1).mean()
    moved = np.linalg.norm(aligned - old, axis=1).mean()
    print(f"mean displacement with other parameters: {moved:.2f} aligned, {moved_raw:.2f} raw")
    assert moved < moved_raw
    # Same parameters: every point stays exactly where it was.
    _, again, _ = embed_and_map(clustered, texts, ClusterParams(min_cluster_size=4), {},
                                before=before)
    assert np.abs(again - old).max() < 1e-4  # float32 layouts


def test_retitle_one_chosen_type_even_when_a_person_renamed_it(clustered):
    """Issue 24, item 5: retitle can be forced for a chosen type; the others keep theirs."""
    tax = taxonomy.current(clustered)
    a, b = [t.type_id for t in tax.visible_types()][:2]
    taxonomy.rename(clustered, a, "my name for a")
    taxonomy.rename(clustered, b, "my name for b")
    r = CliRunner().invoke(cli, ["--db", str(clustered.path), "types", "retitle", "--type",
                                 str(a)])
    assert r.exit_code == 0 and "retitled 1 types" in r.output, r.output
    now = taxonomy.current(clustered).types
    assert now[a].title != "my name for a" and now[a].titled_by != "human"
    assert now[b].title == "my name for b" and now[b].titled_by == "human"
    # a plain retitle still keeps what a person gave
    assert retitle(clustered) == len([t for t in now.values()
                                      if t.members and t.titled_by != "human"])
    assert taxonomy.current(clustered).types[b].title == "my name for b"
    r = CliRunner().invoke(cli, ["--db", str(clustered.path), "types", "retitle", "--type",
                                 "9999"])
    assert r.exit_code != 0 and "no current type 9999 to retitle" in r.output


def test_an_export_after_a_merge_carries_the_merged_types_current_description(clustered):
    """Issue 24, item 5: the merged type's description says what it absorbed, and a
    description a person writes afterwards is what the export carries."""
    tax = taxonomy.current(clustered)
    a, b = [t.type_id for t in tax.visible_types()][:2]
    title_b, desc_b = tax.types[b].title, tax.types[b].description
    taxonomy.merge(clustered, [a, b], into=a, title="merged type")
    row = next(r for r in taxonomy.export_rows(clustered, taxonomy.current(clustered))
               if r["type_id"] == a)
    assert row["title"] == "merged type"
    assert f"Merged with {title_b}" + (f": {desc_b}" if desc_b else "") in row["description"]
    assert row["description"] == taxonomy.current(clustered).types[a].description  # as shown
    taxonomy.describe(clustered, a, "both halves: a wrong operation")
    out = [json.loads(x) for x in taxonomy.export_jsonl(
        clustered, taxonomy.current(clustered)).splitlines()]
    assert next(r for r in out if r["type_id"] == a)["description"] == \
        "both halves: a wrong operation"
