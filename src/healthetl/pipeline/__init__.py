"""The stages: extract, validate, load, run. They return result objects and never print."""
