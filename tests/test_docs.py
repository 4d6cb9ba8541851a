"""The README and docs as a newcomer reads them: short, every link resolves, the examples run."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_reads_in_five_minutes():
    assert len((ROOT / "README.md").read_text()) <= 10_000


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page):
    text = page.read_text()
    links = [m for m in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+://|#|mailto:", m)]
    missing = [m for m in links if not (page.parent / m.split("#")[0]).exists()]
    assert not missing, missing


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


@pytest.mark.parametrize("page, index", [(ROOT / "README.md", 0), (ROOT / "docs" / "diagnostics.md", 0)],
                         ids=["readme-library", "diagnostics-own-model"])
def test_the_examples_run(page, index, one_thread):
    code = _python_blocks(page)[index]
    exec(compile(code, f"{page.name}[{index}]", "exec"), {})
