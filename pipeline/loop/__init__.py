"""Orchestration: the loop (iterate), the stage registry that the CLI and jobs share,
background jobs, presets and experiment files, the cost model, which model each stage runs
with (resolve), and the read side the pages and exports use (views). Imports every layer
below; never the shells."""
