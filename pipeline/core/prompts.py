"""The one prompt loader: the versioned prompt templates in pipeline/prompts/ and their
JSON schemas (a template's version is its file name; manifests store the text)."""

from __future__ import annotations

import json
from pathlib import Path

PROMPTS = Path(__file__).parents[1] / "prompts"


def text(name: str) -> str:
    """The template `name` (pipeline/prompts/<name>.txt); one line naming the file if absent."""
    path = PROMPTS / f"{name}.txt"
    if not path.exists():
        raise FileNotFoundError(f"no prompt template {path}")
    return path.read_text(encoding="utf-8")


def schema(name: str) -> dict:
    """The JSON schema that replies to the template `name` must follow."""
    return json.loads((PROMPTS / f"{name}.schema.json").read_text(encoding="utf-8"))
