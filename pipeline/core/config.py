"""Paths and defaults. Everything overridable by environment variables so that
job subprocesses, tests and the app agree on one store."""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """Where the store, models and logs live (env SEI_DATA_DIR, default data/)."""
    return Path(os.environ.get("SEI_DATA_DIR", ROOT / "data"))


def db_path() -> Path:
    """The DuckDB store in use (env SEI_DB, default data/sei.duckdb)."""
    return Path(os.environ.get("SEI_DB", data_dir() / "sei.duckdb"))


def models_dir() -> Path:
    """Where prepared models are cached (env SEI_MODELS_DIR)."""
    return Path(os.environ.get("SEI_MODELS_DIR", data_dir() / "models"))


def jobs_dir(db: Path | None = None) -> Path:
    """Job logs and the heavy-slot lock live beside the store they belong to."""
    return Path(os.environ.get("SEI_JOBS_DIR", (db or db_path()).parent / "jobs"))


def adapters_dir(db: Path | None = None) -> Path:
    """Trained adapters live beside the store whose runs made them."""
    return Path(os.environ.get("SEI_ADAPTERS_DIR", (db or db_path()).parent / "adapters"))


def map_fragment() -> bool:
    """Whether an Error map edit reruns only the curation (a Streamlit fragment, the default)
    rather than the whole page (env SEI_MAP_FRAGMENT=0)."""
    return os.environ.get("SEI_MAP_FRAGMENT", "1") != "0"


# The embedded default target model.
DEFAULT_MODEL = "smollm2-135m-instruct"


@lru_cache(maxsize=1)
def code_version() -> str:
    """git describe of the checkout, or the package version when not in git."""
    from pipeline import __version__

    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT, capture_output=True, text=True, timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"{__version__}+{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__
