"""Reproduction layer: the sweeps behind each table and figure, and the builders that read run records.

- :mod:`jfb.repro.paper_numbers`: the paper's own numbers (reference only).
- :mod:`jfb.repro.sweeps`: the runs each table and figure needs, per profile (paper, quick, smoke).
- :mod:`jfb.repro.reproduce`: ``make reproduce-table``: launch the missing runs, then build.
- :mod:`jfb.repro.tables` / :mod:`jfb.repro.figures`: ``make table``: Tables 1-3 and Figures 5-6 from records.
"""
