"""Problem sets by name (`gsm8k:train`, `math500/test`): how the loop finds its train and
evaluation sets, and imports the shared benchmark files it knows when they are missing.

The benchmark folder is `SEI_BENCHMARKS_DIR`, default `../shared/data/benchmarks` beside
the checkout; nothing is downloaded. MATH has no train split there: `math/train` is MATH
test minus the 500 problems of MATH-500 (which is evaluated on), as the folder's
MANIFEST.md advises."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.core import config
from pipeline.storage.store import Store

# name -> (file under the benchmark folder, format, sets whose problems it leaves out)
KNOWN: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "gsm8k/train": ("gsm8k/train.jsonl", "gsm8k", ()),
    "gsm8k/test": ("gsm8k/test.jsonl", "gsm8k", ()),
    "math500/test": ("math500/test.jsonl", "math500", ()),
    "math/train": ("math/test.jsonl", "math", ("math500/test",)),
    "svamp/test": ("svamp/test.jsonl", "svamp", ()),
    "college_math/test": ("college_math/test.jsonl", "college_math", ()),
    "gaokao2023en/test": ("gaokao2023en/test.jsonl", "gaokao2023en", ()),
    "sat_math/test": ("sat_math/test.jsonl", "sat_math", ()),
}


# datasets drawn from another's distribution: MATH-500 is 500 problems of MATH's test set,
# so it is in-domain for a MATH train pool
DOMAIN = {"math500": "math"}


def in_domain(eval_sets, train_sets) -> set[str]:
    """The evaluation sets from the train sets' domains (their dataset, or the dataset it
    was drawn from); the rest are out-of-domain."""
    train = {DOMAIN.get(t.split("/", 1)[0], t.split("/", 1)[0]) for t in train_sets}
    return {s for s in eval_sets if DOMAIN.get(s.split("/", 1)[0], s.split("/", 1)[0]) in train}


def benchmarks_dir() -> Path:
    """Where the shared benchmark files are read from (env SEI_BENCHMARKS_DIR)."""
    return Path(os.environ.get("SEI_BENCHMARKS_DIR",
                               config.ROOT.parent / "shared" / "data" / "benchmarks"))


def norm(name: str) -> str:
    """'gsm8k:train' or 'gsm8k/train' as 'gsm8k/train'; anything else is refused."""
    s = name.strip().replace(":", "/", 1) if ":" in name and "/" not in name else name.strip()
    ds, _, sp = s.partition("/")
    if not ds or not sp:
        raise ValueError(f"set {name!r}: expected dataset:split, e.g. gsm8k:train")
    return f"{ds}/{sp}"


def is_test_split(split: str) -> bool:
    """Whether a split holds held-out problems: never analysed, synthesized from or
    drawn into a dev set."""
    s = split.lower()
    return s.startswith(("test", "eval")) or s in ("validation", "heldout", "held_out")


def ensure(store: Store, names: list[str], demo_seed: int = 0) -> list[str]:
    """The sets, normalised, each present in the store: the demo and the known shared
    benchmark files are imported when missing; any other missing set is refused with
    the command that imports it."""
    from pipeline.problems.data import import_demo, import_file

    out = []
    for raw in names:
        name = norm(raw)
        ds, sp = name.split("/", 1)
        if not store.problems(ds, sp, 1):
            if ds == "demo":
                from pipeline.problems.demo import N_TEST, N_TRAIN

                import_demo(store, N_TRAIN, N_TEST, seed=demo_seed)
            elif name in KNOWN:
                rel, fmt, excl = KNOWN[name]
                path = benchmarks_dir() / rel
                if not path.exists():
                    raise ValueError(f"set {name} is not imported and {path} does not exist: "
                                     "set SEI_BENCHMARKS_DIR, or import it with `sei data "
                                     "import FILE --format ... --dataset "
                                     f"{ds} --split {sp}`")
                ensure(store, list(excl))
                import_file(store, path, fmt, ds, sp,
                            exclude=[tuple(e.split("/", 1)) for e in excl] or None,
                            check=False)
            else:
                raise ValueError(f"set {name} is not imported: `sei data import FILE "
                                 f"--format ... --dataset {ds} --split {sp}` first")
        out.append(name)
    return out
