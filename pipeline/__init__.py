"""SEI Studio pipeline: Self-Error-Instruct stages over one DuckDB store."""

__version__ = "0.1.0"
