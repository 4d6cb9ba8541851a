"""Tests of verification/ (the comparisons with the authors' code, the solver study): its scripts import as
modules (``import compare_cg``), and the helpers of tests/ (cli, fakedata, warm_cli) as in the other tests."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "tests", ROOT / "verification"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
