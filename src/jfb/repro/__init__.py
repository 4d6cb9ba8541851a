"""Reproduction layer: the sweeps behind each table and figure, and the builders that read run records.

- :mod:`jfb.repro.paper_numbers`: the paper's own numbers (reference only).
- :mod:`jfb.repro.sweeps`: the runs each table and figure needs, per profile (paper, quick, smoke), and the
  profile's gradient-diagnostics runs (``diagnostics.every``), never taken for the timed ones.
- :mod:`jfb.repro.config`: the configs composed in-process (method labels, presets, run folders).
- :mod:`jfb.repro.plan` / :mod:`jfb.repro.estimate`: what each run will do here, and how long it may take.
- :mod:`jfb.repro.data_files`: which datasets have their files; MNIST's download.
- :mod:`jfb.repro.reproduce`: ``make reproduce-table``: train the runs here, then build and log to W&B.
- :mod:`jfb.repro.selection`: run records and table cells; :mod:`jfb.repro.header`: what the runs ran.
- :mod:`jfb.repro.tables` / :mod:`jfb.repro.figures`: ``make table``: Tables 1-3, Figures 5-6 and the
  gradient-diagnostics table and figure from records (:mod:`jfb.repro.diagnostics`: the checks per run).
- :mod:`jfb.repro.wandb_tables`: the tables and figures as one W&B run of job type "tables".
"""
