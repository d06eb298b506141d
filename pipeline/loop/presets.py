"""Presets and experiment files for `sei iterate`.

A preset is a named set of values over the stages' own defaults (which are declared once,
in each stage's Params dataclass, and are the `demo` preset: sized for a 2-core CPU). An
experiment file (TOML or YAML, as LLaMA-Factory users write them) names a preset and
changes what it wants, top-level loop parameters and one section per stage:

    preset = "paper"
    iterations = 2
    train_sets = ["gsm8k/train", "math/train"]
    eval_sets = ["gsm8k/test", "math500/test", "college_math/test"]
    [synthesize]
    budget = 2000

Resolution order: stage defaults < preset < experiment file < command-line options."""

from __future__ import annotations

import copy
import json
from pathlib import Path

# The paper's protocol (arXiv 2505.22591, section 4 and its released code): 8 bad cases
# per synthesis call, 20 problems per call, 10,000 per iteration (5,000 per dataset),
# Rouge-L 0.7; dev set 50 good + 50 bad, top 5%; LoRA r 8 / alpha 16 / dropout 0.1 on
# q,k,v,o, lr 2e-5, linear schedule with warmup 0.03, batch 1, 3 epochs; 512 new tokens
# everywhere; 3 iterations, each trained from scratch.
PAPER_OOD = ["svamp/test", "college_math/test", "gaokao2023en/test", "sat_math/test"]
PRESETS: dict[str, dict] = {
    "demo": {},
    "paper": {
        "iterations": 3, "mode": "scratch", "max_new_tokens": 512,
        "train_sets": ["gsm8k/train", "math/train"],
        "eval_sets": ["gsm8k/test", "math500/test", *PAPER_OOD],
        "limit_train": None, "eval_limit": None,
        # the instructor analyses (where one is configured), names and assigns the types
        # and writes the problems; without one the preset is refused (instructor_check)
        "cluster": {"method": "llm"},
        "synthesize": {"budget": 10_000, "per_call": 20, "k": 8, "novelty": 0.7,
                       "contamination_rouge": 0.7, "synthesizer": "instructor"},
        "select": {"n_good": 50, "n_bad": 50, "top": 0.05},
        "train": {"r": 8, "alpha": 16, "dropout": 0.1,
                  "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                  "lr": 2e-5, "schedule": "linear", "warmup": 0.03, "batch_size": 1,
                  "epochs": 3},
    },
}


def load_config(path: str | Path) -> dict:
    """An experiment file as a dict: TOML (.toml) or YAML (.yaml, .yml). The message of
    a file that cannot be read or parsed names the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: cannot read the experiment file ({e.strerror})") from None
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ValueError(f"{path}: an experiment file is .toml, .yaml or .yml")
    try:
        if path.suffix == ".toml":
            import tomllib

            d = tomllib.loads(text)
        else:
            import yaml

            d = yaml.safe_load(text) or {}
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError: both name the line
        raise ValueError(f"{path}: not a valid {path.suffix[1:].upper()} file: "
                         f"{str(e).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: an experiment file is a mapping of parameters")
    return d


def merge(base: dict, over: dict) -> dict:
    """`over` on `base`, sections (dicts) merged key by key."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = copy.deepcopy(v)
    return out


def preset_values(name: str) -> dict:
    """A preset's values; an unknown name is refused with the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def resolve(preset: str | None = None, config: dict | None = None,
            overrides: dict | None = None):
    """The loop's parameters: stage defaults < preset < experiment file < overrides."""
    from pipeline.loop.iterate import LoopParams

    config = dict(config or {})
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    name = overrides.pop("preset", None) or preset or config.pop("preset", None) or "demo"
    config.pop("preset", None)
    d = merge(merge(preset_values(name), config), overrides)
    d["preset"] = name
    return LoopParams.from_dict(d, strict=True)


def flat(d: dict, prefix: str = "") -> dict:
    """Nested sections as dotted keys, e.g. {'train.lr': 2e-5}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def deviations(resolved: dict) -> dict:
    """Every resolved value that differs from the preset it names: {key: [preset, now]}."""
    from pipeline.loop.iterate import LoopParams

    ref = flat(LoopParams.from_dict({**preset_values(resolved["preset"]),
                                     "preset": resolved["preset"]}).resolved())
    now = flat(resolved)
    return {k: [ref.get(k), v] for k, v in now.items()
            if json.dumps(ref.get(k), default=str) != json.dumps(v, default=str)}
