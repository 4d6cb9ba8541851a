"""Reproduction layer: the sweeps behind each table and figure, and the builders that read run records.

- :mod:`jfb.repro.sweeps`: the runs each table and figure needs, per profile (paper, quick, smoke).
- :mod:`jfb.repro.config`: the configs composed in-process (method labels, presets, run folders).
- :mod:`jfb.repro.reproduce`: ``make reproduce-table``: train the runs here, then build and log to W&B.
- :mod:`jfb.repro.records`: run records and table cells.
- :mod:`jfb.repro.tables` / :mod:`jfb.repro.figures`: ``make table``: the tables (declared as columns, notes in
  ``notes/``), the figures, the README's summary and docs/results.md, from records.
- :mod:`jfb.repro.wandb_tables`: the tables and figures as one W&B run of job type "tables".
"""
