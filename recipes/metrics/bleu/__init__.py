"""Local `evaluate` metric module `bleu` (loaded by path; see recipes.metrics)."""
