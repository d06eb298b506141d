"""User settings saved by the app: the instructor endpoint and model, the target model.

Kept in a small JSON file beside the store (`sei.duckdb` keeps `sei.settings.json`), so
that two stores, even in one folder, keep their own instructor and model. API keys are
never part of it: they come only from the environment (OPENAI_API_KEY). Environment
variables win over the file, so a job started by the app sees the same choice as a
CLI run in a shell with the same environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pipeline.core import config

SECRET_HINTS = ("key", "token", "secret", "password")


@dataclass
class Settings:
    instructor_base_url: str = ""   # empty: the OpenAI API (when a key is set)
    instructor_model: str = ""      # empty: no instructor, offline analyzer
    target_model: str = config.DEFAULT_MODEL


def path() -> Path:
    """The settings file of the store in use: `<store>.settings.json` beside it (env
    SEI_SETTINGS names another)."""
    if os.environ.get("SEI_SETTINGS"):
        return Path(os.environ["SEI_SETTINGS"])
    db = config.db_path()
    return db.with_name(f"{db.stem}.settings.json")


def _legacy() -> Path:
    """Where earlier versions saved the settings of every store in a folder."""
    return config.db_path().with_name("settings.json")


def load() -> Settings:
    """The store's saved settings (an earlier version's shared `settings.json` beside it
    until these are saved), or the defaults; invalid JSON is an error naming the file."""
    p = path()
    if not p.exists() and not os.environ.get("SEI_SETTINGS") and _legacy().exists():
        p = _legacy()
    if not p.exists():
        return Settings()
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from e
    names = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in raw.items() if k in names})


def target_model() -> str:
    """The target model a run uses when none is named: SEI_TARGET_MODEL, else the one
    saved in the app's settings, else the embedded default."""
    return os.environ.get("SEI_TARGET_MODEL") or load().target_model or config.DEFAULT_MODEL


def save(s: Settings) -> Path:
    """Save the settings after the checks a run would make; returns the file."""
    data = asdict(s)
    if s.target_model not in ("", config.DEFAULT_MODEL, "default"):
        from pipeline.models.target import ModelError, resolve_model_path

        try:  # the same checks a run makes, before a job fails on them
            resolve_model_path(s.target_model)
        except ModelError as e:
            raise ValueError(str(e)) from e
    for k, v in data.items():
        if any(h in k for h in SECRET_HINTS) or str(v).startswith("sk-"):
            raise ValueError(f"settings must not hold secrets ({k}); use the environment")
    p = path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(p)  # atomic: a crash never leaves half a file
    return p
