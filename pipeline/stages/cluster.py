"""Keyphrases -> embeddings -> UMAP -> HDBSCAN (or K-means, or the instructor:
pipeline/analysis/llm_cluster.py) -> error types.

By default one 2-D UMAP serves both the map and the clustering, so that colours on the
map agree with what the eye sees; `cluster_dims > 2` clusters on a separate UMAP.
Every clustering stores its parameters, seed, timings and the diff against the
previous one; clusters inherit type ids from it (see lineage.match); new types are titled
by pipeline/analysis/titles.py.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from pipeline.analysis import llm_cluster, review, taxonomy
from pipeline.analysis.lineage import match
from pipeline.analysis.titles import central_texts, title_for
from pipeline.core import config
from pipeline.core.params import Params, param
from pipeline.core.progress import Progress, no_progress, scaled
from pipeline.models.embed import MODEL_NAME, embed
from pipeline.storage.store import Store


@dataclass
class ClusterParams(Params):
    method: str = param("hdbscan", "hdbscan; kmeans on the map; or llm: the instructor "
                                   "names types from a sample and assigns every keyphrase "
                                   "(the paper's released code).",
                        choices=("hdbscan", "kmeans", "llm"))
    min_cluster_size: int = param(5, "HDBSCAN: the smallest error type.")
    min_samples: int | None = param(None, "HDBSCAN: min_samples (default: min cluster "
                                          "size).")
    n_neighbors: int = param(15, "UMAP neighbours.")
    min_dist: float = param(0.05, "UMAP min_dist.")
    cluster_dims: int = param(2, "UMAP dimensions to cluster in (2: the map itself).")
    k: int = param(8, "K-means clusters.")
    llm_sample: int = param(60, "LLM clustering: keyphrases the first types are named from.")
    llm_batch: int = param(40, "LLM clustering: keyphrases per assignment request.")
    llm_max_types: int = param(12, "LLM clustering: types the instructor may first propose "
                                   "(it may open more while assigning).")
    seed: int = param(0, "Seed of UMAP, K-means and the LLM clustering's sample.")
    titles: str = param("auto", "Type titles: auto (the instructor if configured), "
                                "offline.", choices=("auto", "offline", "instructor"))



# Progress of a clustering in percent: embedding, UMAP, clustering (most of it when the
# instructor clusters, one request at a time), matching types.
STEPS = 100
EXACT_KNN_MAX = 50_000  # distinct points; above this UMAP's own NN-descent is used


def exact_knn(x: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k-nearest neighbours (self included, as UMAP expects) by blocked
    matrix products. Up to tens of thousands of points this takes seconds, is exact, and
    spares each fresh process the ~45 s that numba needs to compile NN-descent."""
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for s in range(0, n, chunk):
        sim = x[s:s + chunk] @ x.T
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        psim = np.take_along_axis(sim, part, 1)
        order = np.argsort(-psim, axis=1, kind="stable")
        idx[s:s + chunk] = np.take_along_axis(part, order, 1)
        dist[s:s + chunk] = np.clip(1.0 - np.take_along_axis(psim, order, 1), 0.0, 2.0)
    return idx, dist


def umap_project(x: np.ndarray, dims: int, p: ClusterParams) -> np.ndarray:
    """UMAP of the embeddings to `dims` dimensions on exact cosine neighbours (when
    there are few enough points), seeded by p.seed."""
    import umap

    n = len(x)
    k = max(2, min(p.n_neighbors, n - 1))
    knn = exact_knn(x, k) if n <= EXACT_KNN_MAX else (None, None)
    # force_approximation_algorithm only makes UMAP take the kNN path (which then uses
    # our exact neighbours) instead of its all-pairs path for fewer than 4096 points.
    reducer = umap.UMAP(n_components=dims, n_neighbors=k,
                        min_dist=p.min_dist, metric="cosine", random_state=p.seed,
                        init="spectral" if n > dims + 2 else "random",
                        precomputed_knn=(knn[0], knn[1], None),
                        force_approximation_algorithm=knn[0] is not None)
    with warnings.catch_warnings():  # both expected: a seed means one thread; no transform()
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        warnings.filterwarnings("ignore", message="precomputed_knn", category=UserWarning)
        return reducer.fit_transform(x)


def align_to(xy: np.ndarray, uniq: list[str], before: dict[str, tuple[float, float]]
             ) -> np.ndarray:
    """Draw a new layout in the previous one's frame: the rotation, scale and shift that
    best fit the texts both maps share (orthogonal Procrustes). A seeded layout from the
    same neighbours then lands exactly where it was, and a new one keeps its orientation.
    (Starting UMAP from the previous layout moved points further: mean displacement 3.2
    vs 0.0 with the same parameters, 2.2 vs 2.0 with other ones, on the test store's map
    whose coordinates spread 4.0 (std).) Unchanged when fewer than 5 or half of the texts
    are shared."""
    known = np.array([t in before for t in uniq])
    if known.sum() < max(5, 0.5 * len(uniq)):
        return xy
    prev = np.array([before[t] for t, k in zip(uniq, known) if k], dtype=float)
    my, mt = xy[known].mean(0), prev.mean(0)
    a, b = xy[known] - my, prev - mt
    u, sv, vt = np.linalg.svd(a.T @ b)
    return (xy - my) @ (u @ vt) * (sv.sum() / ((a ** 2).sum() or 1.0)) + mt


def embed_and_map(store: Store, texts: list[str], p: ClusterParams, timings: dict,
                  progress=no_progress, before: dict[str, tuple[float, float]] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings, 2-D map coordinates and clustering coordinates for each text.

    Identical keyphrases have identical embeddings: each distinct text is embedded and
    mapped once (duplicates would also distort UMAP's neighbour graph), then every point
    is placed at its text's position; HDBSCAN's density still counts every point.
    `before` (text -> previous map position): the new map is drawn in the previous one's
    frame, so points stay where the user last saw them."""
    t0 = time.perf_counter()
    uniq = list(dict.fromkeys(texts))
    where = {t: i for i, t in enumerate(uniq)}
    idx = np.array([where[t] for t in texts])
    if len(uniq) < 5:
        raise ValueError(f"only {len(uniq)} distinct keyphrases; need at least 5 to map them")
    progress(0, STEPS, "cluster", f"embedding {len(uniq)} distinct of {len(texts)} keyphrases")
    xu = embed(store, uniq)
    timings["embed_s"] = time.perf_counter() - t0
    progress(10, STEPS, "cluster", f"UMAP of {len(uniq)} points")
    t = time.perf_counter()
    raw = umap_project(xu, 2, p)
    # HDBSCAN sees the raw layout: aligned coordinates differ in the last bits, which can
    # flip ties between identical keyphrases, so the same seed would not give the same types.
    zu = raw if p.cluster_dims <= 2 else umap_project(xu, p.cluster_dims, p)
    xyu = align_to(raw, uniq, before) if before else raw
    timings["umap_s"] = time.perf_counter() - t
    return xu[idx], xyu[idx], zu[idx]


class Clusterer(Protocol):
    """Groups keyphrases into clusters. One on the map (`on_map`) labels the UMAP
    coordinates; one that is not (the LLM) labels the texts before anything is mapped, and
    names its clusters."""
    name: str
    on_map: bool

    def labels(self, store: Store, kps: list[dict], z: np.ndarray | None, progress
               ) -> tuple[np.ndarray, np.ndarray, dict | None, dict]:
        """(labels, -1 for noise; membership probabilities; each cluster's name and
        description, or None; what to add to the clustering's timings)."""
        ...


class HDBSCANClusterer:
    name, on_map = "hdbscan", True

    def __init__(self, p: ClusterParams):
        self.p = p

    def labels(self, store, kps, z, progress):
        import hdbscan

        hd = hdbscan.HDBSCAN(min_cluster_size=self.p.min_cluster_size,
                             min_samples=self.p.min_samples)
        return hd.fit_predict(z), hd.probabilities_, None, {}


class KMeansClusterer:
    name, on_map = "kmeans", True

    def __init__(self, p: ClusterParams):
        self.p = p

    def labels(self, store, kps, z, progress):
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=min(self.p.k, len(z)), random_state=self.p.seed,
                    n_init=10).fit(z)
        return km.labels_, np.ones(len(z)), None, {}


class LLMClusterer:
    """The paper's released code: the instructor names types from a sample of the
    keyphrases, then assigns every keyphrase in batches."""
    name, on_map = "llm", False

    def __init__(self, p: ClusterParams, ins):
        self.p, self.ins = p, ins

    def labels(self, store, kps, z, progress):
        return _llm_labels(store, kps, self.p, self.ins, progress)


# the registered clusterers, by ClusterParams.method
CLUSTERERS = {"hdbscan": HDBSCANClusterer, "kmeans": KMeansClusterer, "llm": LLMClusterer}


def make_clusterer(p: ClusterParams, instructor=None) -> Clusterer:
    """The one factory: p.method's clusterer (the LLM one with the instructor given, else
    the configured one; refused in one line when there is none)."""
    if p.method not in CLUSTERERS:
        raise ValueError(f"unknown clustering method {p.method!r}; one of {sorted(CLUSTERERS)}")
    if p.method == "llm":
        return LLMClusterer(p, llm_cluster.instructor_for_clustering(instructor))
    return CLUSTERERS[p.method](p)


def labels_for(z: np.ndarray, p: ClusterParams) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels (-1: noise) and membership probabilities of map coordinates, by
    p.method (hdbscan or kmeans)."""
    lab, prob, _, _ = make_clusterer(p).labels(None, [], z, no_progress)
    return lab, prob


def cluster(store: Store, params: ClusterParams | None = None, analysis_id: str | None = None,
            instructor=None, progress=no_progress, make_current: bool | None = None) -> dict:
    """Cluster an analysis's keyphrases into error types. The result becomes the current
    clustering unless it covers fewer bad cases than the current one (or make_current is
    False): then it is held (diff["held"]) until someone makes it current."""
    p = params or ClusterParams()
    aid = analysis_id or store.latest_analysis()
    if aid is None:
        raise ValueError("no keyphrases yet: run `sei analyze` first")
    right = review.overridden_to_correct(store)  # a case a reviewer judged right: no bad case
    kps = [k for k in store.keyphrases(aid) if k["case_id"] not in right]
    if len(kps) < max(5, p.min_cluster_size):
        raise ValueError(f"analysis {aid} has {len(kps)} keyphrases; need at least "
                         f"{max(5, p.min_cluster_size)} to cluster")
    timings: dict = {}
    prev = taxonomy.current_clustering(store)
    prev_pts = store.cluster_points(prev["clustering_id"]) if prev else []
    before = {r["text"]: (r["x"], r["y"]) for r in prev_pts}
    x, xy, lab, prob, named = _map_and_labels(store, kps, p, instructor, timings, progress,
                                              before)
    progress(90, STEPS, "cluster", "matching types")

    ids = [k["kp_id"] for k in kps]
    prev_base = {r["kp_id"]: r["type_id"] for r in prev_pts}
    emb = dict(zip(ids, x))
    assign, diff = match(prev_base, dict(zip(ids, map(int, lab))), emb)
    new_clusters = [c for c, tid in assign.items() if tid is None]
    fresh = store.next_type_ids(len(new_clusters))
    for c, tid in zip(new_clusters, fresh):
        assign[c] = tid
    diff["new"] = [{"cluster": c, "type_id": assign[c]} for c in new_clusters]

    new_types = _title_new_types(store, new_clusters, assign, kps, lab, emb, p, instructor) \
        if named is None else [dict(named[c], type_id=assign[c]) for c in new_clusters]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    key = hashlib.sha256(json.dumps([aid, asdict(p), time.time_ns()]).encode()).hexdigest()[:6]
    meta = {"clustering_id": f"cl-{stamp}-{key}", "analysis_id": aid, "method": p.method,
            "params": asdict(p), "seed": p.seed, "embed_model": MODEL_NAME,
            "n_points": len(ids), "n_clusters": int(len(set(lab) - {-1})),
            "timings": timings, "diff": diff, "code_version": config.code_version(),
            "previous": prev["clustering_id"] if prev else None}
    meta["diff"]["previous"] = meta["previous"]
    held = _held(prev, prev_pts, kps, make_current)
    if held:
        meta["diff"]["held"] = held
    points = [{"kp_id": i, "x": float(a), "y": float(b), "cluster": int(label),
               "type_id": assign.get(int(label)) if label >= 0 else None, "prob": float(pr)}
              for i, (a, b), label, pr in zip(ids, xy, lab, prob)]
    store.save_clustering(meta, points, new_types)
    progress(STEPS, STEPS, "cluster", f"{meta['n_clusters']} clusters")
    return meta


def _map_and_labels(store: Store, kps: list[dict], p: ClusterParams, instructor,
                    timings: dict, progress, before: dict):
    """Embeddings, map coordinates, labels, probabilities and (LLM) each cluster's name."""
    clusterer = make_clusterer(p, instructor)
    texts = [k["text"] for k in kps]
    t = time.perf_counter()
    if not clusterer.on_map:
        # the instructor first: one that fails does so before the embedding and UMAP
        lab, prob, named, extra = clusterer.labels(store, kps, None,
                                                   scaled(progress, 0, 70, STEPS))
        timings.update(extra, cluster_s=time.perf_counter() - t)
        x, xy, _ = embed_and_map(store, texts, p, timings, scaled(progress, 70, 20, STEPS),
                                 before)
        return x, xy, lab, prob, named
    x, xy, z = embed_and_map(store, texts, p, timings, progress, before)
    progress(20, STEPS, "cluster", clusterer.name)
    t = time.perf_counter()
    lab, prob, named, extra = clusterer.labels(store, kps, z, progress)
    timings.update(extra, cluster_s=time.perf_counter() - t)
    return x, xy, lab, prob, named


def _llm_labels(store: Store, kps: list[dict], p: ClusterParams, ins, progress):
    """Labels, probabilities (1: an assignment is not graded) and each cluster's name as
    a type title, by the instructor over the distinct keyphrase texts."""
    uniq = list(dict.fromkeys(k["text"] for k in kps))
    res = llm_cluster.cluster_texts(store, uniq, ins, p.llm_sample, p.llm_batch,
                                    p.llm_max_types, p.seed, progress)
    of = dict(zip(uniq, res.labels))
    lab = np.array([of[k["text"]] for k in kps])
    named = {c: {"title": t["name"][:120], "description": t["description"] or None,
                 "titled_by": ins.name} for c, t in enumerate(res.types)}
    return lab, np.ones(len(kps)), named, {"llm_calls": res.calls,
                                           "llm_unassigned_texts": res.unassigned,
                                           "instructor": ins.name}


def _title_new_types(store: Store, new_clusters: list[int], assign: dict, kps: list[dict],
                     lab, emb: dict, p: ClusterParams, instructor) -> list[dict]:
    """Titles for new types; kept types keep theirs (re-title with `sei types retitle`)."""
    ids = [k["kp_id"] for k in kps]
    texts = {i: k["text"] for i, k in zip(ids, kps)}
    new_types = []
    for c in new_clusters:
        members = [i for i, label in zip(ids, lab) if label == c]
        title, desc, by = title_for(store, [texts[i] for i in members],
                                    central_texts(members, emb, texts), p.titles,
                                    instructor)
        new_types.append({"type_id": assign[c], "title": title, "description": desc,
                          "titled_by": by})
    return new_types


def _held(prev: dict | None, prev_pts: list[dict], kps: list[dict],
          make_current: bool | None) -> dict | None:
    """Why a new clustering waits instead of becoming current: it was asked to, or it
    covers fewer bad cases than the current one. None: it becomes current."""
    old_cases = {r["case_id"] for r in prev_pts}
    new_cases = {k["case_id"] for k in kps}
    if prev and (make_current is False or (make_current is None
                                           and len(new_cases) < len(old_cases))):
        return {"n_cases": len(new_cases), "current_cases": len(old_cases),
                "shared_cases": len(new_cases & old_cases), "current": prev["clustering_id"]}
    return None


def retitle(store: Store, instructor=None, only_unedited: bool = True,
            progress: Progress = no_progress, type_ids: list[int] | None = None) -> int:
    """Recompute titles of the current types without re-clustering (one instructor call
    per type when one titles them: a job in the app, with progress per type). `type_ids`:
    only these, forced (a title a person gave is replaced too)."""
    tax = taxonomy.current(store)
    if tax.clustering is None:
        raise ValueError("no clustering yet")
    kps = {p["kp_id"]: p["text"] for p in tax.points}
    x = embed(store, list(kps.values()))
    emb = dict(zip(kps, x))
    if type_ids is not None:
        missing = [t for t in type_ids if t not in tax.types or not tax.types[t].members]
        if missing:
            raise ValueError(f"no current type {', '.join(map(str, missing))} to retitle")
    todo = [t for t in tax.types.values() if t.members and (
        t.type_id in type_ids if type_ids is not None
        else not (only_unedited and t.titled_by == "human"))]
    progress(0, len(todo), "retitle", "")
    for n, t in enumerate(todo, 1):
        title, desc, by = title_for(store, [kps[k] for k in t.members],
                                    central_texts(t.members, emb, kps),
                                    ClusterParams().titles, instructor)
        if t.titled_by == "human":
            # a person's title lives in the edit log and would win over a stored one: the
            # new title goes there too, as an edit that Undo takes back
            store.add_edit("rename", {"type_id": t.type_id, "title": title,
                                      "description": desc, "titled_by": by}, "retitle")
        else:
            store.set_type_title(t.type_id, title, desc, by)
        progress(n, len(todo), "retitle", f"type {t.type_id}: {title[:60]}")
    return len(todo)


def agreement(store: Store, a_id: str, b_id: str) -> dict:
    """Two clusterings side by side on the keyphrases they share, as clustered (before
    edits): per clustering its method, number of types, type sizes and noise; between
    them the adjusted Rand index and normalised mutual information, once over every shared
    keyphrase (noise one group of its own) and once over those both put in a type."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    meta = {c["clustering_id"]: c for c in store.clusterings()}
    for cid in (a_id, b_id):
        if cid not in meta:
            raise ValueError(f"no clustering {cid!r} (`sei types clusterings` lists them)")
    pts = {cid: {r["kp_id"]: r["cluster"] for r in store.cluster_points(cid)}
           for cid in (a_id, b_id)}
    shared = sorted(set(pts[a_id]) & set(pts[b_id]))
    if len(shared) < 2:
        raise ValueError(f"{a_id} and {b_id} share {len(shared)} keyphrases: nothing to "
                         "compare (they cluster different analyses)")
    rows = []
    for cid in (a_id, b_id):
        lab = [pts[cid][k] for k in shared]
        sizes = sorted(Counter(x for x in lab if x >= 0).values(), reverse=True)
        rows.append({"clustering": cid, "method": meta[cid]["method"], "types": len(sizes),
                     "sizes": sizes, "noise": lab.count(-1), "keyphrases": len(lab)})
    la, lb = [pts[a_id][k] for k in shared], [pts[b_id][k] for k in shared]
    both = [(x, y) for x, y in zip(la, lb) if x >= 0 and y >= 0]
    out = {"rows": rows, "shared": len(shared),
           "ari": float(adjusted_rand_score(la, lb)),
           "nmi": float(normalized_mutual_info_score(la, lb)), "in_types": len(both)}
    if len(both) >= 2:
        xa, xb = zip(*both)
        out["ari_in_types"] = float(adjusted_rand_score(xa, xb))
        out["nmi_in_types"] = float(normalized_mutual_info_score(xa, xb))
    return out
