"""Error types as data: the offline analyzer, titles, the taxonomy and its edit log,
lineage of re-clusterings, LLM clustering's instructor calls, search, the review queue.
Imports the layers below (core, storage, problems, models)."""
