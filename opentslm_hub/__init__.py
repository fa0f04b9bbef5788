"""Shared pieces of OpenTSLM Hub: the offline LLM and the quickstart, series features (`features`) and the reader of
generated text (`parsing`) that the data sets, the MaxEnt-TS rewards and the evaluation all use."""
