"""Fill README.md's results summary and docs/results.md from the committed reference tables.

    python scripts/readme_results.py [--profiles quick,paper]

README.md gets, between ``<!-- results:start -->`` and ``<!-- results:end -->``, a few headline
figures of MNIST read from ``results/<profile>/table*.csv`` (the tables' CSV twins, themselves built
from run records); docs/results.md gets every table of every profile with its header. Nothing is
typed by hand: rerun after ``make update-reference``.
"""
from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
TABLES = ("table1", "table2", "table3", "table_diagnostics", "table_cg_bn")
# What a profile's committed records cannot say about themselves.
NOTES = {
    "paper": "These runs were made on an NVIDIA H200 with the first version of this code, for 3 of the paper's "
             "100 epochs: their Jacobian-based run used conjugate gradients over the whole batch from the JFB "
             "adjoint, not the authors' per-sample CG the preset now runs, and the later tables (diagnostics, "
             "CG with latent batch norm) have no runs. `make update-reference PROFILE=paper` on a GPU replaces them.",
}


def rows(profile: str, table: str) -> list[dict]:
    path = ROOT / "results" / profile / f"{table}.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def pick(table: list[dict], **match) -> dict:
    for r in table:
        if all(r.get(k, "").startswith(v) for k, v in match.items()):
            return r
    return {}


def num(row: dict, key: str, fmt: str) -> str:
    """A cell of ours: the mean, or the word the table shows instead of a number."""
    v = row.get(key, "")
    if v == "":
        return row.get(f"{key}_note") or "—"
    return format(float(v), fmt)


def sci(x: str) -> str:
    """6.0 × 10^6, as the tables print Jacobian-product counts."""
    if x in ("", None):
        return "—"
    import math
    v = float(x)
    if v == 0:
        return "0"
    e = int(math.floor(math.log10(abs(v))))
    return f"{v / 10**e:.1f} × 10^{e}"


def header_value(profile: str, field: str) -> str:
    path = ROOT / "results" / profile / "table1.md"
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line.startswith(f"| {field} |"):
            return line.split("|")[2].strip()
    return "unknown"


def summary(profile: str) -> str:
    t1, t2, t3 = rows(profile, "table1"), rows(profile, "table2"), rows(profile, "table3")
    diag = rows(profile, "table_diagnostics")
    jfb1, exp1 = pick(t1, dataset="MNIST", method="JFB"), pick(t1, dataset="MNIST", method="Explicit")
    speed = pick(t2, dataset="MNIST", method="Speed-up")
    ift2, jfb2 = pick(t2, dataset="MNIST", method="Jacobian"), pick(t2, dataset="MNIST", method="JFB")
    mem = {k: pick(t3, dataset="MNIST", method=k) for k in ("JFB", "Jacobian", "Unrolled")}
    d = pick(diag, method="JFB")
    lines = [
        f"MNIST, profile `{profile}` ({header_value(profile, 'Runs (what ran)')}; {header_value(profile, 'Hardware')}):",
        "",
        "| | paper | ours |",
        "|---|---|---|",
        f"| test accuracy %, JFB / explicit twin | {jfb1.get('paper_acc', '—')} / {exp1.get('paper_acc', '—')} | "
        f"{num(jfb1, 'acc', '.2f')} / {num(exp1, 'acc', '.2f')} |",
        f"| Jacobian-based over JFB time, whole epoch (the authors' timing)* | {float(speed.get('paper_time') or 'nan'):.2f}× | "
        f"{num(speed, 'wall', '.2f')}× |",
        f"| the same, training phase only* | — | {num(speed, 'time', '.2f')}× |",
        f"| Jacobian products per epoch, Jacobian-based | {sci(ift2.get('paper_matvecs'))} | "
        f"{sci(ift2.get('matvecs')) if ift2.get('matvecs') else num(ift2, 'matvecs', '.2g')} |",
        f"| MB saved for backward, JFB / Jacobian-based / unrolled (one network) | not measured | "
        f"{num(mem['JFB'], 'saved', '.1f')} / {num(mem['Jacobian'], 'saved', '.1f')} / {num(mem['Unrolled'], 'saved', '.1f')} |",
    ]
    if d:
        lines.append(f"| JFB's direction against the exact gradient: descent share %, median cosine | not measured | "
                     f"{num(d, 'descent', '.0f')} / {num(d, 'cos_median', '.3f')} |")
    lines += ["", f"Accuracy after the last epoch; JFB on the network with latent batch norm, as the paper "
                  f"(Table 2 compares it with Jacobian-based training without it). *One seed per method, runs made "
                  f"one after another on a shared machine whose load varied: read these time ratios as noisy; the "
                  f"interleaved side-by-side benchmarks are the reliable timing ([docs/benchmarks.md](docs/benchmarks.md)). "
                  f"Details: [results/{profile}/](results/{profile}/README.md)."]
    return "\n".join(lines)


def results_page(profiles: list[str]) -> str:
    parts = ["# Results", "",
             "Generated by `python scripts/readme_results.py` from the committed reference tables, themselves "
             "built from run records by `make update-reference`; nothing here is typed by hand. Each table's "
             "header says what its runs ran, on which hardware, with which versions and code. Numbers of other "
             "machines: run `make reproduce-table` for yours.", ""]
    for profile in profiles:
        folder = ROOT / "results" / profile
        if not folder.is_dir():
            continue
        parts += [f"## Profile `{profile}`", "", f"Folder: [results/{profile}/](../results/{profile}/README.md)", ""]
        if profile in NOTES:
            parts += [NOTES[profile], ""]
        for table in TABLES:
            md = folder / f"{table}.md"
            if md.is_file():
                text = md.read_text().replace("](", f"](../results/{profile}/")
                parts += [re.sub(r"^# ", "### ", text, count=1), ""]
        for png in sorted(folder.glob("*.png")):
            parts += [f"![{png.stem}](../results/{profile}/{png.name})", ""]
    aw = ROOT / "results" / "authors_weights" / "README.md"
    if aw.is_file():
        parts += ["## The authors' released weights", "",
                  "[results/authors_weights/](../results/authors_weights/README.md): every released file evaluated "
                  "in our networks, with the logit difference against their code.", ""]
    return "\n".join(parts)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profiles", default="quick,paper")
    a = p.parse_args(argv)
    profiles = [x for x in a.profiles.split(",") if x]
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} markers to fill")
    new = f"{START}\n{summary(profiles[0])}\n{END}"
    readme.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda m: new, text, flags=re.S))
    (ROOT / "docs" / "results.md").write_text(results_page(profiles))
    print(f"README.md: summary of results/{profiles[0]}; docs/results.md: {', '.join(profiles)}")


if __name__ == "__main__":
    main()
