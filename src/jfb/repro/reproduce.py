"""Train a profile's runs on this machine as Hydra multiruns, then build the tables and figures from them.

    python -m jfb.repro.reproduce --profile quick --seeds "0 1 2" --data-dir data \
        [--results-root reproduced] [--launcher joblib|submitit_slurm] [--dry-run] [--no-download] [overrides...]

Runs land in ``<results-root>/<profile>/runs/``, the tables beside them; the default root is this machine's, and the
committed ``results/`` is never read as this machine's. Rerun, the trainer skips completed runs and resumes or extends
the others; the tables are built even when a multirun fails, showing it. Datasets without data are not launched.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from ..data.download import download, has_files
from . import config, sweeps
from .records import load_records
from .tables import LOCAL_ROOT, MANIFEST, REFERENCE_ROOT, Context, build, parse_seeds
from .wandb_tables import log_build

NO_DATA_EXIT = 2
DOWNLOAD_ON_THE_SPOT = ("mnist",)  # small enough to fetch at once; SVHN and CIFAR-10: `make data`


def say(msg: str) -> None:
    print(f"[reproduce] {msg}", flush=True)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def run_overrides(profile, runs_dir: Path, data_dir: Path, extra: list) -> list:
    """The overrides of every run besides its spec's and seed; the user's (``extra``) replace any of the same key."""
    common = {**profile.overrides, "paths.output_root": str(runs_dir), "paths.data_dir": str(data_dir),
              "profile": profile.name}
    logger = ([e.split("=", 1)[1] for e in extra if _key(e) == "logger"] or [profile.overrides.get("logger")])[-1]
    fixed = [f"{k}={v}" for k, v in common.items()] + ([f"logger.group=reproduce-{profile.name}"] if logger != "none"
                                                        else [])
    extra_keys = {_key(e) for e in extra}
    return [f for f in fixed if _key(f) not in extra_keys] + list(extra)


def commands(profile, seeds: tuple, runs_dir: Path, data_dir: Path, datasets: tuple, launcher, extra: list) -> list:
    """The ``python -m jfb.train -m`` command lines that cover every run of the profile."""
    fixed = run_overrides(profile, runs_dir, data_dir, extra)
    if launcher:
        fixed.append(f"hydra/launcher={launcher}")
    elif profile.jobs > 1:
        fixed += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={profile.jobs}"]
    groups = sweeps.multiruns(profile.specs(datasets))
    clash = sorted({_key(e) for e in extra} & ({k for g, _ in groups for k in g} | {"seed", "diagnostics.every"}))
    if clash:
        raise SystemExit(f"these overrides are set by the sweep itself and cannot be passed: {', '.join(clash)}")
    return [[sys.executable, "-m", "jfb.train", "-m", *sweeps.sweep_args(g),
             "seed=" + ",".join(map(str, seeds if every_seed else seeds[:1])), *fixed] for g, every_seed in groups]


def plan_runs(profile, seeds: tuple, overrides: list, runs_dir: Path, datasets: tuple) -> list:
    """(spec, seed, run folder, the trainer's plan) of every run, as the trainer will see its folder."""
    from ..training import ConfigError, load, plan

    out = []
    for spec in profile.specs(datasets):
        for seed in (seeds if spec.all_seeds else seeds[:1]):
            cfg = load(config.resolved([*spec.override_args(), f"seed={seed}", *overrides]))
            folder = Path(runs_dir) / cfg.run_name
            try:
                p = plan(folder, cfg)
            except ConfigError as e:
                p = str(e)
            out.append((spec, seed, folder, p))
    return out


def estimate(planned: list, reference: Path, jobs: int) -> str:
    """How long the runs to train took when the committed reference of this profile was made (its records)."""
    ref = {r.path.name: r.summary for r in load_records(reference) if r.completed}
    todo = [(folder, p) for _, _, folder, p in planned if not isinstance(p, str) and p.action != "skip"]
    known = [(ref[f.name], p.epochs_left) for f, p in todo if f.name in ref]
    if not todo:
        return "nothing to train"
    if not known:
        return f"no estimate ({len(todo)} runs to train; no record of them in {reference})"
    secs = sum(((s.wall_time_per_epoch_s or 0) + (s.callback_time_s or 0) / max(s.epochs_completed, 1)) * left
               for s, left in known)
    machines = "; ".join(sorted({s.device_name or "?" for s, _ in known}))
    return (f"about {secs / 3600 / max(jobs, 1):.1f} h for {len(known)} of the {len(todo)} runs to train: what they "
            f"took in the committed reference records ({machines}, {jobs} run(s) at once); a slower or busier machine "
            "takes longer")


def check_data(profile, data_dir: Path, allow_download: bool, dry_run: bool) -> dict:
    """dataset -> reason, for each dataset of the profile without data (after MNIST's download)."""
    if not profile.needs_data:
        return {}
    skipped = {ds: "no data" for ds in sweeps.DATASETS if not has_files(ds, data_dir)}
    failed = {}
    for ds in [d for d in skipped if d in DOWNLOAD_ON_THE_SPOT and allow_download and not dry_run]:
        say(f"{sweeps.title(ds)}: files missing, downloading them into {data_dir} with torchvision ...")
        if (why := download(ds, data_dir)) is None:
            del skipped[ds]
        else:
            failed[ds] = why
    for ds in skipped:
        how = ("let `make reproduce-table` download it (network access needed)" if ds in DOWNLOAD_ON_THE_SPOT else
               "`make data DATA_DIR=<folder>` downloads it")
        fetched = f"; torchvision's download failed ({failed[ds]})" if ds in failed else ""
        say(f"{sweeps.title(ds)}: no data in {data_dir}{fetched}; put the files there, point DATA_DIR at a folder that "
            f"has them, or {how}; its cells read 'missing: no data'")
    return skipped


def _portable(cmd: list, data_dir: Path) -> str:
    """A command for the manifest: no folder of this machine (the data folder as $DATA_DIR, others relative)."""
    return " ".join(a.replace(str(data_dir), "$DATA_DIR").replace(os.getcwd() + os.sep, "")
                    for a in ["python", *cmd[1:]])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m jfb.repro.reproduce", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick", choices=sorted(sweeps.PROFILES))
    p.add_argument("--seeds", default=None, help='seeds, e.g. "0 1 2" (default: the profile\'s)')
    p.add_argument("--data-dir", default=os.environ.get("JFB_DATA_DIR") or "data")
    p.add_argument("--results-root", default=LOCAL_ROOT,
                   help=f"writes <results-root>/<profile>/ (default: {LOCAL_ROOT}, this machine's results; "
                        f"{REFERENCE_ROOT}: update the committed reference)")
    p.add_argument("--reference-root", default=REFERENCE_ROOT, help="the committed reference (default: results)")
    p.add_argument("--launcher", default=os.environ.get("LAUNCHER") or None,
                   help="Hydra launcher: joblib (parallel, local) or submitit_slurm (SLURM); default: the profile's")
    p.add_argument("--dry-run", action="store_true", help="print the commands and a time estimate, run nothing")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download MNIST with torchvision when its files are missing (default: yes)")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument("overrides", nargs="*", help="Hydra overrides passed to every run")
    a = p.parse_args(argv)
    try:
        return _main(a)
    except KeyboardInterrupt:
        say("interrupted; rerun the same command to go on where it stopped")
        return 130


def _main(a) -> int:
    profile = sweeps.get_profile(a.profile)
    seeds = parse_seeds(a.seeds) or profile.seeds
    extra = shlex.split(os.environ.get("EXTRA", "")) + list(a.overrides)
    out_dir = Path(a.results_root) / profile.name
    runs_dir, data_dir = out_dir / "runs", Path(a.data_dir).absolute()  # a link stays a link: records keep its name
    skipped = check_data(profile, data_dir, a.download, a.dry_run)
    datasets = tuple(ds for ds in sweeps.DATASETS if ds not in skipped)
    if not datasets:
        say(f"no dataset of profile {profile.name} has data in {data_dir}; nothing to train and no table to build. "
            "Set DATA_DIR to the folder with the files, or run `make data`.")
        return NO_DATA_EXIT
    cmds = commands(profile, seeds, runs_dir, data_dir, datasets, a.launcher, extra)
    planned = plan_runs(profile, seeds, run_overrides(profile, runs_dir, data_dir, extra), runs_dir, datasets)
    say(f"profile {profile.name}: {len(planned)} runs in {len(cmds)} multiruns, seeds {' '.join(map(str, seeds))} "
        f"(Tables 1-2; the other runs seed {seeds[0]}), into {runs_dir}")
    say(f"time: {estimate(planned, Path(a.reference_root) / profile.name / 'runs', profile.jobs)}")
    if a.dry_run:
        for _, _, folder, p in planned:
            say(f"  {folder.name}: {p if isinstance(p, str) else f'{p.action}, {p.epochs_left} epoch(s) to train'}")
        for c in cmds:
            print(shlex.join(c))
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"profile": profile.name, "seeds": list(seeds), "skipped": skipped, "data_dir": "$DATA_DIR",
                "diagnostics_every": profile.diagnostics_every, "extra_overrides": extra,
                "run_names": sorted(folder.name for _, _, folder, _ in planned),
                "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "commands": [_portable(c, data_dir) for c in cmds], "returncodes": []}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    for i, c in enumerate(cmds, 1):
        say(f"multirun {i}/{len(cmds)}: {_portable(c, data_dir)}")
        rc = subprocess.call(c)
        manifest["returncodes"].append(rc)
        if rc == 130:
            raise KeyboardInterrupt
        if rc != 0:
            say(f"multirun {i} exited with {rc}; going on (its failed runs show in the tables)")
    manifest["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    built = build(profile.name, a.results_root, seeds, figures=not a.no_figures, reference_root=a.reference_root)
    say(f"wrote {', '.join(sorted({q.name for q in built.written.values()}))} into {out_dir}/")
    for line in built.not_drawn:
        say(line)
    say(log_build(built, profile.name, seeds, out_dir))
    ctx = Context(load_records(runs_dir, profile.name), seeds, preferred=set(manifest["run_names"]))
    gaps = [(spec, seed, why) for spec in profile.specs(datasets) for seed, why in ctx.select(spec).gaps().items()]
    failed = sum(rc != 0 for rc in manifest["returncodes"])
    for spec, seed, why in gaps:
        say(f"{spec.dataset} {spec.label} (latent_bn={spec.latent_bn}) seed {seed}: {why}")
    if failed or gaps:
        say(f"{len(gaps)} of {len(planned)} runs did not complete ({failed} of {len(cmds)} multiruns exited non-zero); "
            "their cells show it. Run again to retry them.")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
