"""Local `evaluate` metric module `accuracy` (loaded by path; see recipes.metrics)."""
