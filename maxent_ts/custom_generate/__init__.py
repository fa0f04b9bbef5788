"""The MaxEnt-TS search, laid out as a transformers custom generation strategy folder (single-dot relative imports
only, nothing outside torch, numpy and transformers)."""
