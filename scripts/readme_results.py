"""Copy the MNIST rows of ``results/<profile>/table{1,2,3}.md`` into README.md between the markers
``<!-- results:start -->`` and ``<!-- results:end -->``, so the README's figures are the tables'.

Usage: ``python scripts/readme_results.py [--profiles quick,paper]`` (after ``make table``).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TITLES = {"quick": "Quick profile (CPU, real MNIST)", "paper": "Paper profile shortened (GPU, real MNIST)",
          "smoke": "Smoke profile (synthetic data)"}
START, END = "<!-- results:start -->", "<!-- results:end -->"


def mnist_rows(table: Path) -> str:
    lines = table.read_text().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| Dataset"))
    return "\n".join(lines[head:head + 2] + [line for line in lines[head + 2:] if line.startswith("| MNIST")])


def provenance(table: Path) -> str:
    keep = ("| Hardware", "| Versions", "| Commit", "| Built")
    rows = [line for line in table.read_text().splitlines() if line.startswith(keep)]
    return "; ".join(line.strip("| ").replace(" | ", ": ") for line in rows)


def block(profiles) -> str:
    parts = []
    for profile in profiles:
        folder = ROOT / "results" / profile
        parts.append(f"### {TITLES.get(profile, profile)}\n\n{provenance(folder / 'table1.md')}\n")
        for n in (1, 2, 3):
            parts.append(f"**Table {n}** (`results/{profile}/table{n}.md`)\n\n{mnist_rows(folder / f'table{n}.md')}\n")
    return "\n".join(parts)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profiles", default="quick,paper")
    a = p.parse_args(argv)
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} markers to fill")
    new = f"{START}\n{block(a.profiles.split(','))}\n{END}"
    readme.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda m: new, text, flags=re.S))
    print(f"README.md: results of {a.profiles} copied in")


if __name__ == "__main__":
    main()
