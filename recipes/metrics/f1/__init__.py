"""Local `evaluate` metric module `f1` (loaded by path; see recipes.metrics)."""
