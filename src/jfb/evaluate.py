"""Evaluate a trained network on the test set: ``python -m jfb.evaluate`` (console script ``jfb-evaluate``).

Three uses::

    python -m jfb.evaluate RUN_DIR [--data-dir D] [--device cpu]
    python -m jfb.evaluate --authors-weights FILE --dataset mnist|svhn|cifar10 [--data-dir D] [--also-train-mode]
    python -m jfb.evaluate --write-table OUT_DIR --authors-dir DIR [--data-dir D] [--logit-diffs JSON]

RUN_DIR is a run folder of ``python -m jfb.train``: the network and solver settings come from its
``config.yaml``, the weights from its newest intact checkpoint. ``--authors-weights`` loads one of the
authors' released files into our networks (:mod:`jfb.models.authors`) and evaluates it as their code
at commit b35a245 did when it saved the file: eval mode, their driver's tolerance and iteration
cap. ``--also-train-mode`` adds the figure in training mode (batch-norm batch statistics, dropout
on), which is what the authors' HEAD ``get_stats`` measures. ``--write-table`` evaluates every
released file in DIR and writes ``README.md`` and ``authors_weights.csv`` to OUT_DIR.

Reported: accuracy and mean cross-entropy over the test set, forward-solver iterations per batch
(mean, max) and the capped share, the share of batches whose solve stopped at ``max_iter`` without
meeting the tolerance. Bad input gets one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import os
import platform
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

TRAIN_MODE_SEED = 0
TRAIN_MODE_LABEL = f"train mode (BN batch statistics, dropout on; seed {TRAIN_MODE_SEED})"


class EvaluateError(ValueError):
    """Bad input: printed as one line, exit status 2."""


@dataclass
class Result:
    samples: int
    batches: int
    accuracy: float  # percent
    loss: float  # mean cross-entropy
    iters_mean: Optional[float]  # forward-solver iterations per batch; None for an explicit network
    iters_max: Optional[int]
    capped: Optional[int]  # batches whose solve stopped at max_iter without meeting the tolerance

    @property
    def capped_frac(self) -> Optional[float]:
        return None if self.capped is None else self.capped / self.batches

    def line(self) -> str:
        s = f"accuracy {self.accuracy:.2f} % ({self.samples} images), loss {self.loss:.4f}"
        if self.iters_mean is None:
            return s + ", explicit (no solve)"
        return (s + f", solver iterations mean {self.iters_mean:.1f} max {self.iters_max}, "
                f"capped {self.capped_frac:.2f} ({self.capped} of {self.batches} batches)")

    def as_dict(self) -> dict:
        return {**asdict(self), "capped_frac": self.capped_frac}


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, loader, train_mode: bool = False, seed: int = TRAIN_MODE_SEED) -> Result:
    """Accuracy, loss and solver iterations of ``model`` over ``loader`` (``model(x) -> (logits, stats)``).

    Eval mode by default. ``train_mode=True`` evaluates a copy in training mode (batch statistics,
    dropout drawn from a generator seeded with ``seed``); the model itself is left untouched.
    """
    if train_mode:
        model = copy.deepcopy(model).train()
    else:
        model.eval()
    loss = torch.zeros((), dtype=torch.float64)
    correct, samples, batches, iters, capped = 0, 0, 0, [], 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for x, y in loader:
            logits, stats = model(x)
            loss += F.cross_entropy(logits.float(), y, reduction="sum").to(torch.float64).cpu()
            correct += int((logits.argmax(dim=1) == y).sum())
            samples += y.shape[0]
            batches += 1
            if stats is not None:
                iters.append(stats.fwd_iters)
                capped += int(not stats.fwd_converged)
    if samples == 0:
        raise EvaluateError("the test set is empty")
    return Result(samples=samples, batches=batches, accuracy=100.0 * correct / samples, loss=float(loss) / samples,
                  iters_mean=sum(iters) / len(iters) if iters else None, iters_max=max(iters) if iters else None,
                  capped=capped if iters else None)


def load_test_split(dataset: str, data_dir: str, batch_size: int, device: torch.device,
                    source: str = "torchvision", synthetic_n: int = 256, verify: bool = True):
    """The test split of ``dataset`` alone (the training split is never read), unshuffled, normalised
    as in training. ``verify``: torchvision's MD5 checks (SVHN, CIFAR-10). Raises
    :class:`jfb.data.DatasetNotFoundError` when the files are missing."""
    from .data import SOURCES, TensorLoader, get_spec

    spec = get_spec(dataset)
    if source not in SOURCES:
        raise EvaluateError(f"dataset source {source!r} is not one of {sorted(SOURCES)}")
    images, labels = SOURCES[source](spec, "test", str(data_dir), bool(verify), synthetic_n)
    return TensorLoader(images, labels, spec, batch_size, shuffle=False, augment=None, seed=0, device=device)


# ---------------------------------------------------------------- run folders


def evaluate_run(run_dir: str, data_dir: Optional[str], device: torch.device, batch_size: Optional[int],
                 also_train_mode: bool = False) -> dict:
    """Evaluate the newest intact checkpoint of a ``python -m jfb.train`` run folder in eval mode (and
    in training mode with ``also_train_mode``)."""
    import yaml

    from .training.build import build_network
    from .training.checkpoint import UnsafeCheckpoint, list_checkpoints, load_latest

    run = Path(run_dir)
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise EvaluateError(f"RUN_DIR={run_dir!r} has no config.yaml: not a run folder of python -m jfb.train")
    cfg = yaml.safe_load(cfg_path.read_text())
    ckpt_dir = run / "checkpoints"
    try:
        state = load_latest(ckpt_dir, map_location=device)
    except UnsafeCheckpoint as e:
        raise EvaluateError(str(e)) from None
    if state is None:
        what = "none is intact" if list_checkpoints(ckpt_dir) else "there is none"
        raise EvaluateError(f"RUN_DIR={run_dir!r}: no checkpoint to evaluate in {ckpt_dir} ({what})")
    model = build_network(cfg, device)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:300]
        raise EvaluateError(f"{ckpt_dir}: the checkpoint does not fit the network of {cfg_path} ({first})") from None
    d = cfg["dataset"]
    data_dir = _data_dir(data_dir, cfg)
    loader = load_test_split(d["name"], data_dir, batch_size or int(cfg["trainer"]["test_batch_size"]), device,
                             source=d.get("source", "torchvision"),
                             synthetic_n=int((d.get("synthetic_size") or (512, 256))[1]),
                             verify=d.get("verify", True))
    result = evaluate_model(model, loader)
    m = cfg["model"]
    out = {"run_dir": str(run), "epoch": state.get("epoch"), "dataset": d["name"], "source": d.get("source"),
           "model": m["name"], "implicit": m["implicit"], "method": cfg["method"]["name"],
           "params": sum(p.numel() for p in model.parameters()), "data_dir": str(data_dir),
           "batch_size": loader.batch_size, "device": str(device), "eval": result.as_dict(), "_result": result,
           "train_mode": None}
    if also_train_mode:
        tm = evaluate_model(model, loader, train_mode=True)
        out["train_mode"], out["_train_result"] = tm.as_dict(), tm
    return out


def _data_dir(given: Optional[str], cfg: dict) -> str:
    if given:
        return given
    if os.environ.get("JFB_DATA_DIR"):
        return os.environ["JFB_DATA_DIR"]
    recorded = (cfg.get("paths") or {}).get("data_dir")
    # run records keep only the last component of paths outside the working directory
    if isinstance(recorded, str) and not recorded.startswith("<elsewhere>"):
        return recorded
    return "data"


# ---------------------------------------------------------------- the authors' released weights


def evaluate_authors(path: str, dataset: str, data_dir: str, device: torch.device, batch_size: int = 400,
                     also_train_mode: bool = False, trust_pickle: bool = False) -> dict:
    """Load a released file into our network (:func:`jfb.models.authors.load_authors_weights`) and
    evaluate it in eval mode (and in training mode with ``also_train_mode``).

    Missing data is not an error here: the result then has ``"missing"`` set and no figures, so that
    loading and the parameter count are still checked.
    """
    from .data import DatasetNotFoundError
    from .models.authors import load_authors_weights, untrained_parameters

    model, variant, content = load_authors_weights(path, dataset, trust_pickle=trust_pickle)
    model = model.to(device)
    hist = content.get("test_acc_hist") or []
    out = {"file": os.path.basename(path), "sha256": _sha256(path), "dataset": dataset, "variant": asdict(variant),
           "network": variant.describe(), "params": model.num_params(),
           "recorded_acc": float(hist[-1]) if hist else None, "recorded_epochs": len(hist),
           "untrained": untrained_parameters(content, variant), "batch_size": batch_size,
           "device": str(device), "missing": None, "eval": None, "train_mode": None}
    try:
        loader = load_test_split(dataset, data_dir, batch_size, device)
    except DatasetNotFoundError as e:
        out["missing"] = str(e)
        return out
    result = evaluate_model(model, loader)
    out["eval"], out["_result"] = result.as_dict(), result
    if also_train_mode:
        tm = evaluate_model(model, loader, train_mode=True)
        out["train_mode"], out["_train_result"] = tm.as_dict(), tm
    return out


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- the table of released weights

_DATASET_ORDER = {"mnist": 0, "svhn": 1, "cifar10": 2}
_METHOD_ORDER = {"jfb": 0, "explicit": 1, "jacobian": 2}
_TAGS = (("CIFAR10", "cifar10"), ("SVHN", "svhn"), ("MNIST", "mnist"))


def _dataset_of(name: str) -> str:
    for tag, ds in _TAGS:
        if name.upper().startswith(tag):
            return ds
    raise EvaluateError(f"--authors-dir: cannot tell the dataset of {name!r} from its name "
                        "(the released files start with MNIST, SVHN or CIFAR10)")


def hardware(device: torch.device) -> str:
    from .training.env import device_name

    return device_name(device) + (" (GPU)" if device.type == "cuda" else "")


def versions() -> str:
    import numpy
    import torchvision

    return (f"Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"numpy {numpy.__version__}")


def write_table(out_dir: str, authors_dir: str, data_dir: str, device: torch.device, batch_size: int,
                logit_diffs: Optional[str], also_train_mode: bool, command: str) -> list:
    """Evaluate every ``*.pth`` in ``authors_dir`` and write ``README.md`` and ``authors_weights.csv``.

    ``logit_diffs`` is the JSON of ``scripts/compare_authors_logits.py``; a row takes its figure only
    when the file's SHA-256 matches the one measured there.
    """
    files = sorted(Path(authors_dir).glob("*.pth"))
    if not files:
        raise EvaluateError(f"--authors-dir={authors_dir!r} holds no .pth files")
    diffs, meta = {}, {}
    if logit_diffs:
        try:
            meta = json.loads(Path(logit_diffs).read_text())
            diffs = {r["sha256"]: r for r in meta["files"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise EvaluateError(f"--logit-diffs={logit_diffs!r} is not a compare_authors_logits.py JSON "
                                f"({e})") from None
    rows = []
    for f in files:
        r = evaluate_authors(str(f), _dataset_of(f.name), data_dir, device, batch_size, also_train_mode)
        r["logits"] = diffs.get(r["sha256"])
        rows.append(r)
        print(f"{f.name}: " + ("missing: no data" if r["missing"] else r["_result"].line()), flush=True)
    rows.sort(key=lambda r: (_DATASET_ORDER[r["dataset"]], _METHOD_ORDER[r["variant"]["method"]]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hw, ver = hardware(device), versions()
    _write_csv(out / "authors_weights.csv", rows, hw, ver, command)
    (out / "README.md").write_text(_readme(rows, hw, ver, command, also_train_mode, logit_diffs, meta))
    return rows


def _pct(x) -> str:
    return "" if x is None else f"{x:.2f}"


def _diff_cell(r) -> str:
    d = r.get("logits")
    if d is None:
        return "not measured"
    return f"{d['max_abs_diff']:.1e} ({d['inputs']})"


def _write_csv(path: Path, rows: list, hw: str, ver: str, command: str) -> None:
    cols = ["file", "sha256", "dataset", "code_class", "driver", "network_and_settings", "parameters",
            "recorded_acc", "recorded_epochs", "eval_acc", "eval_loss", "eval_iters_mean", "eval_iters_max",
            "eval_capped_frac", "train_mode_acc", "train_mode_loss", "never_trained",
            "max_logit_diff", "logit_inputs", "status", "hardware", "versions", "command"]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            e, t, d, u = r["eval"] or {}, r["train_mode"] or {}, r.get("logits") or {}, r["untrained"]
            w.writerow({
                "file": r["file"], "sha256": r["sha256"], "dataset": r["dataset"],
                "code_class": r["variant"]["code_class"], "driver": r["variant"]["driver"],
                "network_and_settings": r["network"], "parameters": r["params"], "recorded_acc": r["recorded_acc"],
                "recorded_epochs": r["recorded_epochs"], "eval_acc": e.get("accuracy"), "eval_loss": e.get("loss"),
                "eval_iters_mean": e.get("iters_mean"), "eval_iters_max": e.get("iters_max"),
                "eval_capped_frac": e.get("capped_frac"), "train_mode_acc": t.get("accuracy"),
                "train_mode_loss": t.get("loss"), "never_trained": "" if u is None else " ".join(u),
                "max_logit_diff": d.get("max_abs_diff"), "logit_inputs": d.get("inputs"),
                "status": "missing: no data" if r["missing"] else "evaluated", "hardware": hw, "versions": ver,
                "command": command,
            })


def _readme(rows, hw, ver, command, also_train_mode, logit_diffs, meta) -> str:
    from .models.authors import AUTHORS_COMMIT

    lines = [
        "# The authors' released weights, evaluated here",
        "",
        f"Every file of the authors' `trained_networks/` was saved by their commit `{AUTHORS_COMMIT}`; each is "
        "loaded (with `torch.load(weights_only=True)` and an allow-list, no code run) into our network in the "
        "configuration of the class that saved it (`src/jfb/models/authors.py`) and evaluated on the test set "
        "in eval mode, with the tolerance and iteration cap of the driver that trained it. "
        "\"recorded\" is the last entry of the file's `test_acc_hist` (the files were saved at their best test "
        "epoch). The max logit difference is against the authors' own network built from "
        f"`{AUTHORS_COMMIT}:Networks.py` with the same weights and inputs, in eval mode "
        "(`scripts/compare_authors_logits.py`).",
        "",
        "| file | network and settings (code definition) | parameters | recorded (%) | eval mode, ours (%) | "
        + ("train mode, ours (%) | " if also_train_mode else "")
        + "solver iterations, eval (mean / max, capped share) | max logit difference vs their code |",
        "|---|---|---:|---:|---:|" + ("---:|" if also_train_mode else "") + "---|---|",
    ]
    for r in rows:
        e, t = r["eval"], r["train_mode"]
        ours = "missing: no data" if r["missing"] else _pct(e["accuracy"])
        iters = "" if r["missing"] else ("explicit" if e["iters_mean"] is None else
                                         f"{e['iters_mean']:.1f} / {e['iters_max']}, {e['capped_frac']:.2f}")
        rec = f"{r['recorded_acc']:.2f} ({r['recorded_epochs']} epochs)" if r["recorded_acc"] is not None else ""
        cells = [f"`{r['file']}`", r["network"], f"{r['params']:,}", rec, ours]
        if also_train_mode:
            cells.append("missing: no data" if r["missing"] else _pct(t["accuracy"]) if t else "")
        cells += [iters, _diff_cell(r)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Hardware: {hw}. Versions: {ver}.", "", "Produced by:", "", "```", command, "```", ""]
    if meta:
        lines += [f"Logit differences: `{logit_diffs}`, measured on {meta.get('hardware')} with "
                  f"{meta.get('versions')}, their code from {meta.get('their_code')}, by:", "", "```",
                  str(meta.get("command")), "```", ""]
        if meta.get("notes"):
            lines += ["Shims the comparison needed to run their code: " + "; ".join(meta["notes"]) + ".", ""]
    lines += ["Notes:", ""]
    for r in rows:
        if r["missing"] or r["recorded_acc"] is None:
            continue
        gaps = [f"eval mode {r['eval']['accuracy'] - r['recorded_acc']:+.2f} pp"]
        if r["train_mode"]:
            gaps.append(f"train mode {r['train_mode']['accuracy'] - r['recorded_acc']:+.2f} pp")
        lines.append(f"- `{r['file']}`: ours minus recorded: {', '.join(gaps)}.")
    if also_train_mode:
        lines.append(f"- {TRAIN_MODE_LABEL[0].upper() + TRAIN_MODE_LABEL[1:]}: batch normalisation uses each test "
                     "batch's statistics and dropout is on, as the authors' HEAD `get_stats` evaluates (it never "
                     "calls `net.eval()`). The b35a245 Jacobian-based drivers' `get_test_stats` call `net.eval()` "
                     "once, but `utils.compute_fixed_point` ends with `T.train()`, so S on every batch, and Q from "
                     "the second batch on, ran in training mode when those files' figures were recorded.")
    for untrained, files in _group_untrained(rows).items():
        lines.append(f"- No Adam state for: {untrained}; in {', '.join(f'`{f}`' for f in files)}: these parameters "
                     "never received a gradient in the runs that saved them.")
    lines.append("- JFB rows: b35a245's `get_stats` capped the evaluation solve at the running average of the "
                 "training depth, which the files do not record; the driver's `max_depth` is used here.")
    return "\n".join(lines) + "\n"


def _group_untrained(rows) -> dict:
    """Description of the never-trained parameters -> files, naming the part of the network they belong to."""
    from .models.authors import VARIANTS, module_map

    parts = {"Q": "Q", "R": "the latent convolutions", "S": "S, the classifier",
             "unused": "the two batch norms defined but never used in the forward pass"}
    groups: dict = {}
    for r in rows:
        if not r["untrained"]:
            continue
        mapping = module_map(VARIANTS[(r["dataset"], r["variant"]["method"])])
        where: dict = {}
        for name in r["untrained"]:
            ours = mapping.get(name.rpartition(".")[0], "?")
            where.setdefault(parts.get(ours.split(".")[0], ours), []).append(name)
        text = "; ".join(f"{part} ({', '.join(names)})" for part, names in where.items())
        groups.setdefault(text, []).append(r["file"])
    return groups


# ---------------------------------------------------------------- command line


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EvaluateError(f"--device={name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvaluateError(f"--device={name!r}: no CUDA device is available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise EvaluateError(f"--device={name!r}: only cpu and cuda are supported")
    return device


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jfb.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", help="a run folder of python -m jfb.train")
    p.add_argument("--authors-weights", metavar="FILE", help="one of the authors' released .pth files")
    p.add_argument("--dataset", help="with --authors-weights: mnist, svhn or cifar10")
    p.add_argument("--write-table", metavar="OUT_DIR", help="evaluate every file of --authors-dir, write the table")
    p.add_argument("--authors-dir", metavar="DIR", help="with --write-table: the folder of released files")
    p.add_argument("--logit-diffs", metavar="JSON", help="with --write-table: scripts/compare_authors_logits.py output")
    p.add_argument("--also-train-mode", action="store_true", help="also evaluate in training mode (labelled so)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of a file that needs it (runs code from the file)")
    p.add_argument("--data-dir", help="data root (default: $JFB_DATA_DIR, the run's data_dir, or ./data)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--batch-size", type=int, help="test batch (default: the run's test_batch_size; 400 for files)")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    return p


def _run(a, argv: list) -> int:
    modes = [x for x in (a.run_dir, a.authors_weights, a.write_table) if x]
    if len(modes) != 1:
        raise EvaluateError("give exactly one of RUN_DIR, --authors-weights FILE or --write-table OUT_DIR")
    if a.batch_size is not None and a.batch_size < 1:
        raise EvaluateError(f"--batch-size={a.batch_size} must be >= 1")
    if a.threads is not None:
        if a.threads < 1:
            raise EvaluateError(f"--threads={a.threads} must be >= 1")
        torch.set_num_threads(a.threads)
    device = _device(a.device)
    from .data import DATASETS, default_data_dir

    mode = "RUN_DIR" if a.run_dir else "--authors-weights" if a.authors_weights else "--write-table"
    unused = {"RUN_DIR": ("dataset", "authors_dir", "logit_diffs", "trust_pickle"),
              "--authors-weights": ("authors_dir", "logit_diffs"), "--write-table": ("dataset",)}[mode]
    for flag in unused:
        if getattr(a, flag):
            raise EvaluateError(f"--{flag.replace('_', '-')} does not apply to {mode}")
    if a.run_dir:
        out = evaluate_run(a.run_dir, a.data_dir, device, a.batch_size, a.also_train_mode)
        print(f"run: {out['run_dir']} (checkpoint of epoch {out['epoch']}; {out['dataset']}, {out['model']}, "
              f"method {out['method']}, {out['params']:,} parameters)")
        print(f"test set: {out['dataset']} ({out['source']}) in {out['data_dir']}, batch {out['batch_size']}, "
              f"{out['device']}")
        print(f"eval mode: {out.pop('_result').line()}")
        if a.also_train_mode:
            print(f"{TRAIN_MODE_LABEL}: {out.pop('_train_result').line()}")
    elif a.authors_weights:
        if a.dataset not in DATASETS:
            raise EvaluateError(f"--dataset={a.dataset!r}: with --authors-weights give one of {sorted(DATASETS)}")
        data_dir = a.data_dir or default_data_dir()
        out = evaluate_authors(a.authors_weights, a.dataset, data_dir, device, a.batch_size or 400,
                               a.also_train_mode, a.trust_pickle)
        print(f"file: {a.authors_weights}")
        print(f"network: {out['network']}; {out['params']:,} parameters")
        if out["recorded_acc"] is not None:
            print(f"recorded in the file: {out['recorded_acc']:.2f} % (last of {out['recorded_epochs']} entries "
                  "of test_acc_hist)")
        if out["missing"]:
            raise EvaluateError(f"{out['missing']} (the file loaded into our network; nothing to evaluate it on)")
        else:
            print(f"test set: {a.dataset} in {data_dir}, batch {out['batch_size']}, {out['device']}")
            print(f"eval mode: {out.pop('_result').line()}")
            if a.also_train_mode:
                print(f"{TRAIN_MODE_LABEL}: {out.pop('_train_result').line()}")
    else:
        if not a.authors_dir:
            raise EvaluateError("--write-table needs --authors-dir DIR (the folder of released .pth files)")
        command = "python -m jfb.evaluate " + shlex.join(argv)
        rows = write_table(a.write_table, a.authors_dir, a.data_dir or default_data_dir(), device,
                           a.batch_size or 400, a.logit_diffs, a.also_train_mode, command)
        out = {"rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]}
        print(f"wrote {Path(a.write_table) / 'README.md'} and {Path(a.write_table) / 'authors_weights.csv'}")
    if a.json:
        Path(a.json).write_text(json.dumps({k: v for k, v in out.items() if not k.startswith("_")}, indent=1))
    return 0


def main(argv=None) -> None:
    from .data import DatasetNotFoundError
    from .models.authors import AuthorsFileError

    argv = sys.argv[1:] if argv is None else [str(x) for x in argv]
    a = _parser().parse_args(argv)
    try:
        code = _run(a, argv)
    except (EvaluateError, AuthorsFileError, DatasetNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
