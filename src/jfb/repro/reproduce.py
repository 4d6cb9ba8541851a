"""Run the missing runs of a profile as Hydra multiruns, then build the tables and figures.

    python -m jfb.repro.reproduce --profile quick --seeds "0 1 2" --data-dir data \
        [--launcher joblib|submitit_slurm] [--results-root results] [--dry-run] [hydra overrides...]

Each multirun is ``python -m jfb.train -m ...`` with ``skip_completed=true``: run again, completed runs
exit at once, failed or interrupted ones resume from their last checkpoint. Runs land in
``<results-root>/<profile>/runs/<run_name>/``; all runs of one profile share the W&B group
``reproduce-<profile>``. A multirun that exits non-zero (a failed run) does not stop the others; the
tables are built in any case and show the failure. Datasets whose files are missing under
``--data-dir`` are not launched; their cells read "missing: no data".

Trailing arguments are passed to every run as Hydra overrides, after the profile's own, e.g.
``hydra/launcher=joblib hydra.launcher.n_jobs=2`` or ``device=cuda``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from . import sweeps
from .records import load_records, select
from .tables import MANIFEST, build, parse_seeds

# The files torchvision needs per dataset, used only when jfb.data cannot be imported.
_FALLBACK_FILES = {
    "mnist": [f"MNIST/raw/{f}" for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")],
    "svhn": ["train_32x32.mat", "test_32x32.mat"],
    "cifar10": [f"cifar-10-batches-py/{f}" for f in (*(f"data_batch_{k}" for k in range(1, 6)), "test_batch")],
}


def required_files(dataset: str) -> list[str]:
    try:
        from jfb.data import get_spec

        spec = get_spec(dataset)
        return sorted({f for split in ("train", "test") for f in spec.files[split]})
    except Exception:
        return _FALLBACK_FILES[dataset]


def missing_data(datasets: tuple[str, ...], data_dir: Path) -> dict[str, str]:
    """dataset -> "no data" for each dataset whose files are not all under ``data_dir``."""
    return {ds: "no data" for ds in datasets if not all((data_dir / f).is_file() for f in required_files(ds))}


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def commands(profile: sweeps.Profile, seeds: tuple[int, ...], runs_dir: Path, data_dir: Path,
             datasets: tuple[str, ...], launcher: str | None, extra: list[str]) -> list[list[str]]:
    """The ``python -m jfb.train -m`` command lines that cover every run of the profile."""
    common = dict(profile.overrides)
    common.update({
        "paths.output_root": str(runs_dir),
        "paths.data_dir": str(data_dir),
        "skip_completed": "true",
        "profile": profile.name,
    })
    fixed = [f"{k}={v}" for k, v in common.items()] + [f"++logger.group=reproduce-{profile.name}"]
    if launcher:
        fixed.append(f"hydra/launcher={launcher}")
    # Extra overrides replace the profile's own of the same key (Hydra rejects a key given twice).
    extra_keys = {_key(e) for e in extra}
    fixed = [f for f in fixed if _key(f) not in extra_keys] + list(extra)
    groups = sweeps.multiruns(sweeps.all_specs(datasets))
    swept = {k for g in groups for k in g} | {"seed"}
    clash = sorted(extra_keys & swept)
    if clash:
        raise SystemExit(f"these overrides are set by the sweep itself and cannot be passed: {', '.join(clash)}")
    seed_arg = "seed=" + ",".join(str(s) for s in seeds)
    return [[sys.executable, "-m", "jfb.train", "-m", *sweeps.sweep_args(g), seed_arg, *fixed] for g in groups]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jfb.repro.reproduce", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick", choices=sorted(sweeps.PROFILES))
    p.add_argument("--seeds", default="0", help='seeds, e.g. "0 1 2" (default: 0)')
    p.add_argument("--data-dir", default=os.environ.get("JFB_DATA_DIR") or "data")
    p.add_argument("--results-root", default="results", help="writes <results-root>/<profile>/ (default: results)")
    p.add_argument("--launcher", default=os.environ.get("LAUNCHER") or None,
                   help="Hydra launcher: joblib (parallel, local) or submitit_slurm (SLURM); default: basic (sequential)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run")
    a = p.parse_args(argv)

    profile = sweeps.get_profile(a.profile)
    seeds = parse_seeds(a.seeds) or (0,)
    env_extra = shlex.split(os.environ.get("EXTRA", ""))
    extra = env_extra + list(a.overrides)
    out_dir = Path(a.results_root).resolve() / profile.name
    runs_dir = out_dir / "runs"
    data_dir = Path(a.data_dir).resolve()

    skipped = missing_data(sweeps.DATASETS, data_dir) if profile.needs_data else {}
    datasets = tuple(ds for ds in sweeps.DATASETS if ds not in skipped)
    for ds, why in skipped.items():
        print(f"[reproduce] {ds}: {why} under {data_dir} (need {', '.join(required_files(ds))}); "
              f"its cells will read 'missing: {why}'. `make data` fetches what torchvision can download.")
    cmds = commands(profile, seeds, runs_dir, data_dir, datasets, a.launcher, extra) if datasets else []
    n_runs = len(sweeps.all_specs(datasets)) * len(seeds) if datasets else 0
    print(f"[reproduce] profile {profile.name}: {n_runs} runs in {len(cmds)} multiruns, seeds {' '.join(map(str, seeds))}, "
          f"into {runs_dir}")
    if a.dry_run:
        for c in cmds:
            print(shlex.join(c))
        return 0

    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"profile": profile.name, "seeds": list(seeds), "skipped": skipped,
                "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "commands": [shlex.join(c) for c in cmds], "returncodes": []}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    failed = 0
    for i, c in enumerate(cmds, 1):
        print(f"[reproduce] multirun {i}/{len(cmds)}: {shlex.join(c[3:])}", flush=True)
        rc = subprocess.call(c)
        manifest["returncodes"].append(rc)
        if rc != 0:
            failed += 1
            print(f"[reproduce] multirun {i} exited with {rc}; going on (its failed runs show in the tables)", flush=True)
    manifest["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))

    written = build(profile.name, a.results_root, seeds, figures=not a.no_figures)
    print(f"[reproduce] wrote {', '.join(sorted({p.name for p in written.values()}))} into {out_dir}/")
    # A multirun goes on past a failed job and may exit 0: the records say what really happened.
    gaps = unfinished(runs_dir, profile.name, datasets, seeds)
    for spec, seed, why in gaps:
        print(f"[reproduce] {spec.dataset} {spec.label} (latent_bn={spec.latent_bn}) seed {seed}: {why}")
    if failed or gaps:
        print(f"[reproduce] {len(gaps)} of {n_runs} runs did not complete ({failed} of {len(cmds)} multiruns exited "
              "non-zero); their cells show it. Run again to retry them.")
        return 1
    return 0


def unfinished(runs_dir: Path, profile: str, datasets: tuple[str, ...], seeds: tuple[int, ...]):
    """(spec, seed, why) of every run of the sweep that has no completed record."""
    records = load_records(runs_dir, profile)
    out = []
    for spec in sweeps.all_specs(datasets) if datasets else []:
        sel = select(records, spec, seeds)
        out += [(spec, seed, why) for seed, why in sel.gaps().items()]
    return out


if __name__ == "__main__":
    raise SystemExit(main())
