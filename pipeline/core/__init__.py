"""Foundation: paths and defaults (config), the parameter contract (params, options), the
progress callback, secret scrubbing, statistics, the heap guard. Pure helpers with no store
and no model; they import nothing else from the pipeline."""
