"""Training recipes for the OpenTSLM curriculum (TRL SFTTrainer + accelerate)."""
