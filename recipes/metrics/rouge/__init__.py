"""Local `evaluate` metric module `rouge` (loaded by path; see recipes.metrics)."""
