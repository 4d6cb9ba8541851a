"""Train a profile's runs on this machine as Hydra multiruns, then build the tables and figures from them.

    python -m jfb.repro.reproduce --profile quick --seeds "0 1 2" --data-dir data \
        [--results-root reproduced] [--launcher joblib|submitit_slurm] [--dry-run] [--no-download] \
        [hydra overrides...]

The profile's runs are those of Tables 1-3 and Figures 5-6, and its gradient-diagnostics runs (MNIST,
one per method, ``diagnostics.every`` of the profile; runs of their own, never timed for the tables).
Runs land in ``<results-root>/<profile>/runs/<run_name>/`` (``paths.output_root``; the folder name
carries a hash of every setting that can change the numbers), tables and figures in
``<results-root>/<profile>/``. The default results root, ``reproduced/``, holds this machine's
results and is ignored by git; the committed reference results (``results/<profile>/``, other
hardware) are never read as this machine's: ``make update-reference`` writes them deliberately with
``--results-root results``.

Each multirun is ``python -m jfb.train -m ...``: rerun, the trainer skips completed runs, resumes
unfinished ones and extends those that ran fewer epochs. A multirun with a failed job exits non-zero
after running the others; the next multirun still starts and the tables are built in any case,
showing the failure. Datasets whose files are missing under ``--data-dir`` are not launched (MNIST is
downloaded by torchvision first, unless ``--no-download``); a profile none of whose datasets has data
exits with status 2. The tables and figures are also logged to W&B (group ``reproduce-<profile>``,
job type "tables").

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
from .data_files import DOWNLOAD_ON_THE_SPOT, download, missing_data, no_data_line
from .estimate import fmt_duration, load_benches, pick_bench, run_seconds
from .plan import PlannedRun, plan_runs
from .selection import load_records, select
from .tables import LOCAL_ROOT, MANIFEST, REFERENCE_ROOT, build, parse_seeds

NO_DATA_EXIT = 2


def say(msg: str) -> None:
    print(f"[reproduce] {msg}", flush=True)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def run_overrides(profile: sweeps.Profile, runs_dir: Path, data_dir: Path, extra: list[str],
                  launcher: str | None = None) -> list[str]:
    """The overrides every run of the sweep gets besides its spec's and its seed: the profile's, the
    run folder root, the data folder, the profile stamp, the W&B group, then the user's."""
    common = dict(profile.overrides)
    common.update({"paths.output_root": str(runs_dir), "paths.data_dir": str(data_dir), "profile": profile.name})
    fixed = [f"{k}={v}" for k, v in common.items()] + [f"++logger.group=reproduce-{profile.name}"]
    if launcher:
        fixed.append(f"hydra/launcher={launcher}")
    # Extra overrides replace the profile's own of the same key (Hydra rejects a key given twice).
    extra_keys = {_key(e) for e in extra}
    return [f for f in fixed if _key(f) not in extra_keys] + list(extra)


def commands(profile: sweeps.Profile, seeds: tuple[int, ...], runs_dir: Path, data_dir: Path,
             datasets: tuple[str, ...], launcher: str | None, extra: list[str]) -> list[list[str]]:
    """The ``python -m jfb.train -m`` command lines that cover every run of the profile."""
    fixed = run_overrides(profile, runs_dir, data_dir, extra, launcher)
    groups = sweeps.multiruns(profile.specs(datasets))
    swept = {k for g in groups for k in g} | {"seed"}
    clash = sorted({_key(e) for e in extra} & swept)
    if clash:
        raise SystemExit(f"these overrides are set by the sweep itself and cannot be passed: {', '.join(clash)}")
    seed_arg = "seed=" + ",".join(str(s) for s in seeds)
    return [[sys.executable, "-m", "jfb.train", "-m", *sweeps.sweep_args(g), seed_arg, *fixed] for g in groups]


def this_device(planned: list[PlannedRun]) -> tuple[str, str]:
    """(device kind, device name) the runs will train on here."""
    import torch

    from jfb.training.env import device_name, resolve_device

    dev = resolve_device(planned[0].cfg["device"]) if planned else torch.device("cpu")
    return dev.type, device_name(dev)


def print_estimate(planned: list[PlannedRun], bench_dir: Path, per_run: bool) -> None:
    todo = [p for p in planned if p.action != "skip"]
    done = len(planned) - len(todo)
    kind, name = this_device(planned)
    bench = pick_bench(load_benches(bench_dir), kind, name)
    if bench is None:
        say(f"time estimate: none (no benchmark of a {kind} device in {bench_dir}; `make bench` writes one)")
        return
    total, notes = 0.0, set()
    for p in todo:
        s, note = run_seconds(bench, p.cfg, p.epochs_left)
        total += s
        if note:
            notes.add(note)
        if per_run:
            say(f"  {p.name}: {p.action}, {p.epochs_left} epoch(s) to train, about {fmt_duration(s)}")
    mismatch = "" if bench.device_name == name else f"; this machine: {name}"
    say(f"time estimate: about {fmt_duration(total)} for {len(todo)} run(s) to train ({done} already complete, "
        f"skipped). This is an estimate from the benchmark {bench.path} ({bench.device_name}, {bench.date}"
        f"{mismatch}): per-step times scaled to each network, method and batch size; the machine's load and the "
        "solvers' iteration counts move the real time.")
    for n in sorted(notes):
        say(f"  estimate caveat: {n}")


def unfinished(runs_dir: Path, profile: sweeps.Profile, datasets: tuple[str, ...], seeds: tuple[int, ...],
               preferred: set[str] | None = None):
    """(spec, seed, why) of every run of the sweep that has no completed record."""
    records = load_records(runs_dir, profile.name)
    out = []
    for spec in profile.specs(datasets) if datasets else []:
        sel = select(records, spec, seeds, preferred=preferred)
        out += [(spec, seed, why) for seed, why in sel.gaps().items()]
    return out


def check_data(profile: sweeps.Profile, data_dir: Path, allow_download: bool, dry_run: bool) -> dict[str, str]:
    """dataset -> reason, for each dataset of the profile without data (after MNIST's download)."""
    if not profile.needs_data:
        return {}
    skipped = missing_data(sweeps.DATASETS, data_dir)
    failed: dict[str, str] = {}
    for ds in [d for d in skipped if d in DOWNLOAD_ON_THE_SPOT]:
        if not allow_download or dry_run:
            continue
        say(f"{sweeps.DATASET_TITLES[ds]}: files missing, downloading them into {data_dir} with torchvision ...")
        why = download(ds, data_dir)
        if why is None:
            del skipped[ds]
        else:
            failed[ds] = why
    for ds in skipped:
        say(no_data_line(ds, data_dir, failed.get(ds)))
    return skipped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jfb.repro.reproduce", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick", choices=sorted(sweeps.PROFILES))
    p.add_argument("--seeds", default="0", help='seeds, e.g. "0 1 2" (default: 0)')
    p.add_argument("--data-dir", default=os.environ.get("JFB_DATA_DIR") or "data")
    p.add_argument("--results-root", default=LOCAL_ROOT,
                   help=f"writes <results-root>/<profile>/ (default: {LOCAL_ROOT}, this machine's results; "
                        f"{REFERENCE_ROOT}: update the committed reference)")
    p.add_argument("--reference-root", default=REFERENCE_ROOT,
                   help="the committed reference results, linked from the README (default: results)")
    p.add_argument("--bench-dir", default=str(Path(REFERENCE_ROOT) / "bench"),
                   help="benchmark figures for the time estimate (default: results/bench)")
    p.add_argument("--launcher", default=os.environ.get("LAUNCHER") or None,
                   help="Hydra launcher: joblib (parallel, local) or submitit_slurm (SLURM); "
                        "default: basic (sequential)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and a time estimate, run nothing")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download MNIST with torchvision when its files are missing (default: yes)")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run")
    a = p.parse_args(argv)

    profile = sweeps.get_profile(a.profile)
    seeds = parse_seeds(a.seeds) or (0,)
    extra = shlex.split(os.environ.get("EXTRA", "")) + list(a.overrides)
    out_dir = Path(a.results_root).resolve() / profile.name
    runs_dir = out_dir / "runs"
    data_dir = Path(a.data_dir).resolve()

    skipped = check_data(profile, data_dir, a.download, a.dry_run)
    datasets = tuple(ds for ds in sweeps.DATASETS if ds not in skipped)
    if not datasets:
        say(f"no dataset of profile {profile.name} has data in {data_dir}; nothing to train and no table to build. "
            "Set DATA_DIR to the folder with the files, or run `make data`.")
        return NO_DATA_EXIT
    cmds = commands(profile, seeds, runs_dir, data_dir, datasets, a.launcher, extra)
    specs = profile.specs(datasets)
    planned = plan_runs(specs, seeds, run_overrides(profile, runs_dir, data_dir, extra), runs_dir)
    say(f"profile {profile.name}: {len(planned)} runs in {len(cmds)} multiruns, seeds {' '.join(map(str, seeds))}, "
        f"into {runs_dir}")
    print_estimate(planned, Path(a.bench_dir), per_run=a.dry_run)
    if a.dry_run:
        for c in cmds:
            print(shlex.join(c))
        return 0

    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"profile": profile.name, "seeds": list(seeds), "skipped": skipped, "data_dir": str(data_dir),
                "diagnostics_every": profile.diagnostics_every,
                "extra_overrides": extra, "run_names": sorted(p.name for p in planned),
                "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "commands": [shlex.join(c) for c in cmds], "returncodes": []}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    failed = 0
    for i, c in enumerate(cmds, 1):
        say(f"multirun {i}/{len(cmds)}: {shlex.join(c[3:])}")
        rc = subprocess.call(c)
        manifest["returncodes"].append(rc)
        if rc != 0:
            failed += 1
            say(f"multirun {i} exited with {rc}; going on (its failed runs show in the tables)")
    manifest["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))

    built = build(profile.name, a.results_root, seeds, figures=not a.no_figures, reference_root=a.reference_root)
    say(f"wrote {', '.join(sorted({p.name for p in built.written.values()}))} into {out_dir}/")
    for line in built.not_drawn:
        say(line)
    from .wandb_tables import log_build

    say(log_build(built, profile.name, seeds, out_dir))
    gaps = unfinished(runs_dir, profile, datasets, seeds, set(manifest["run_names"]))
    for spec, seed, why in gaps:
        diagnostics = "" if spec.diagnostics is None else f", diagnostics every {spec.diagnostics} steps"
        say(f"{spec.dataset} {spec.label} (latent_bn={spec.latent_bn}{diagnostics}) seed {seed}: {why}")
    if failed or gaps:
        say(f"{len(gaps)} of {len(planned)} runs did not complete ({failed} of {len(cmds)} multiruns exited "
            "non-zero); their cells show it. Run again to retry them.")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
