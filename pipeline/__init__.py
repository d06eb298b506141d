"""SEI Studio pipeline: Self-Error-Instruct stages over one DuckDB store.

One folder per layer, bottom to top (tests/test_layout.py enforces it): core, storage,
problems, models, analysis, stages, loop, shells. A module imports its own folder and the
folders below it; docs/layout.md says what each module holds."""

__version__ = "0.1.0"
