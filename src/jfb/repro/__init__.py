"""Reproduction: the runs (``sweeps``), their records (``records``), the tables and figures built from them."""
