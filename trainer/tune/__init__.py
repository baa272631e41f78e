"""Hyperparameter search: `python -m trainer.tune --config FILE --space SPACE.yaml`.

Seed 003 grid-searched a YAML space with a hand-kept status file. Here the space is parsed and
checked against the config (`space`), the search is an Optuna study kept in SQLite in the
study's directory, so a killed search resumes (`study`), every trial is an ordinary run under
that directory, hopeless trials are pruned on their epoch metrics (`pruning`), the outcome is a
ranked table, CSV and plot (`results`), and `--vertex` translates the same space into a Vertex AI
hyperparameter tuning job (`vertex`).
"""
