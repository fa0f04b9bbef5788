"""Utilities around the Hub-portable model folder `modeling_opentslm`: the offline LLM and the quickstart."""
