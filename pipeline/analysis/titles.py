"""Titles and descriptions for error types: by the instructor when one is configured,
else offline from the most representative keyphrases (the most common pattern, numbers
abstracted, or the most central keyphrase)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from pipeline.storage.store import Store


def central_texts(members: list[int], emb: dict, texts: dict, n: int = 5) -> list[str]:
    """The distinct texts of the members nearest their mean embedding, at most n: what a
    type's title is made from."""
    v = np.array([emb[i] for i in members])
    c = v.mean(0)
    order = np.argsort(-(v @ c))
    return list(dict.fromkeys(texts[members[i]] for i in order))[:n]


def title_for(store: Store, texts: list[str], central: list[str], titles: str = "auto",
              instructor=None) -> tuple[str, str, str]:
    """(title, description, titled_by): the instructor's when one is given, or configured
    and `titles` is "auto" (ClusterParams.titles); else offline."""
    from pipeline.analysis import offline_analyzer as analyzer
    from pipeline.models.instructor import InstructorError, from_env, load_prompt

    ins = instructor if instructor is not None else (from_env() if titles == "auto" else None)
    if ins is not None:
        template, schema = load_prompt("type_title_v1")
        prompt = template.format(keyphrases="\n".join(f"- {t}" for t in central))
        try:
            r = ins.ask_json(store, prompt, schema, purpose="type title")
            return r["title"].strip()[:120], r.get("description"), ins.name
        except InstructorError:
            pass  # fall back to the offline title; titled_by says so
    title, desc = offline_title(texts, central)
    return title, desc, analyzer.ANALYZER


_NUMS = re.compile(r"\d+(?:[.,]\d+)*")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _template(text: str) -> str:
    return _NUMS.sub("N", _QUOTED.sub("'…'", text))


def offline_title(texts: list[str], central: list[str]) -> tuple[str, str]:
    """A title and description from the most representative keyphrases, without a model:
    the most common keyphrase pattern (numbers abstracted) when it covers a good share of
    the members, else the most central keyphrase."""
    counts = Counter(_template(t) for t in texts)
    pattern, n = counts.most_common(1)[0]
    title = pattern if n >= 0.3 * len(texts) else _template(central[0])
    examples = "; ".join(f"“{t}”" for t in central[:3])
    desc = f"{len(texts)} keyphrases; most representative: {examples}"
    return title[:120], desc
