"""Data sets of the OpenTSLM curriculum, all in one record schema (`hub_datasets.schema`)."""
