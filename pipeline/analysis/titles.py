"""Titles and descriptions for error types, by a Titler: the instructor when one is
configured, else offline from the most representative keyphrases (the most common pattern,
numbers abstracted, or the most central keyphrase). `make_titler` picks; a type's
`titled_by` is the titler's name."""

from __future__ import annotations

import re
from collections import Counter
from typing import Protocol

import numpy as np

from pipeline.storage.store import Store


def central_texts(members: list[int], emb: dict, texts: dict, n: int = 5) -> list[str]:
    """The distinct texts of the members nearest their mean embedding, at most n: what a
    type's title is made from."""
    v = np.array([emb[i] for i in members])
    c = v.mean(0)
    order = np.argsort(-(v @ c))
    return list(dict.fromkeys(texts[members[i]] for i in order))[:n]


class Titler(Protocol):
    name: str  # what a type's titled_by records

    def title(self, store: Store, texts: list[str],
              central: list[str]) -> tuple[str, str | None, str]:
        """(title, description, titled_by) of a type from its keyphrases."""
        ...


class OfflineTitler:
    """No model: the most common keyphrase pattern, or the most central keyphrase."""
    name = "offline-titler-v1"

    def title(self, store: Store, texts: list[str],
              central: list[str]) -> tuple[str, str | None, str]:
        return (*offline_title(texts, central), self.name)


class InstructorTitler:
    """The instructor names the type from its most central keyphrases; where it fails, the
    offline title stands in, and titled_by says so."""

    def __init__(self, ins):
        self.ins, self.name = ins, ins.name

    def title(self, store: Store, texts: list[str],
              central: list[str]) -> tuple[str, str | None, str]:
        from pipeline.models.instructor import InstructorError, load_prompt

        template, schema = load_prompt("type_title_v1")
        prompt = template.format(keyphrases="\n".join(f"- {t}" for t in central))
        try:
            r = self.ins.ask_json(store, prompt, schema, purpose="type title")
            return r["title"].strip()[:120], r.get("description"), self.name
        except InstructorError:
            return OfflineTitler().title(store, texts, central)


def make_titler(titles: str = "auto", instructor=None) -> Titler:
    """The one factory: the instructor given, or the configured one when `titles` is
    "auto" (ClusterParams.titles); else offline."""
    from pipeline.models.instructor import from_env

    ins = instructor if instructor is not None else (from_env() if titles == "auto" else None)
    return InstructorTitler(ins) if ins is not None else OfflineTitler()


def title_for(store: Store, texts: list[str], central: list[str], titles: str = "auto",
              instructor=None) -> tuple[str, str, str]:
    """(title, description, titled_by) by the titler `titles` and `instructor` pick."""
    return make_titler(titles, instructor).title(store, texts, central)


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
