"""The MaxEnt-TS search as a transformers custom generation strategy: ``generate.py`` is the entry point that
``model.generate(custom_generate=..., trust_remote_code=True)`` loads, the other modules are what it needs (single-dot
relative imports only, and nothing outside pip's torch, numpy and transformers)."""
