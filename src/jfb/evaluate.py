"""Evaluate a trained network on the test set: ``python -m jfb.evaluate`` (console script ``jfb-evaluate``).

    jfb-evaluate RUN_DIR [--data-dir D] [--device cpu] [--also-train-mode]
    jfb-evaluate --authors-weights FILE --dataset mnist|svhn|cifar10 [--data-dir D] [--also-train-mode]

A released file is evaluated as the authors' code did when it saved the file (eval mode, their driver's tolerance
and iteration cap; docs/authors-weights.md); ``--also-train-mode`` adds the training-mode figure (batch statistics,
dropout on) that their HEAD ``get_stats`` measures. Bad input gets one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
import yaml

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
        return (s + f", solver iterations mean {self.iters_mean:.1f} max {self.iters_max}, capped "
                f"{self.capped_frac:.2f} ({self.capped} of {self.batches} batches)")

    def as_dict(self) -> dict:
        return {**asdict(self), "capped_frac": self.capped_frac}


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, loader, train_mode: bool = False, seed: int = TRAIN_MODE_SEED) -> Result:
    """Accuracy, loss and solver iterations of ``model`` over ``loader``, in eval mode, or with ``train_mode`` on a
    copy in training mode (batch statistics, dropout drawn from a generator seeded with ``seed``)."""
    model = copy.deepcopy(model).train() if train_mode else model.eval()
    loss = torch.zeros((), dtype=torch.float64)
    correct, samples, batches, iters, capped = 0, 0, 0, [], 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for x, y in loader:
            logits, stats = model(x)
            loss += F.cross_entropy(logits.float(), y, reduction="sum").to(torch.float64).cpu()
            correct += int((logits.argmax(dim=1) == y).sum())
            samples, batches = samples + y.shape[0], batches + 1
            if stats is not None:
                iters.append(stats.fwd_iters)
                capped += int(not stats.fwd_converged)
    if samples == 0:
        raise EvaluateError("the test set is empty")
    return Result(samples, batches, 100.0 * correct / samples, float(loss) / samples,
                  sum(iters) / len(iters) if iters else None, max(iters) if iters else None, capped if iters else None)


def load_test_split(dataset: str, data_dir: str, batch_size: int, device: torch.device, source: str = "torchvision",
                    synthetic_n: int = 256, verify: bool = True):
    """The test split of ``dataset`` alone, unshuffled, normalised as in training (errors name ``--data-dir``)."""
    from .data import TensorLoader, get_spec
    from .data.sources import load_synthetic, load_torchvision

    spec = get_spec(dataset)
    images, labels = (load_synthetic(spec, "test", synthetic_n) if source == "synthetic" else
                      load_torchvision(spec, "test", str(data_dir), verify, flag="--data-dir"))
    return TensorLoader(images, labels, spec, batch_size, shuffle=False, augment=None, seed=0, device=device)


def evaluate_run(run_dir: str, data_dir: Optional[str], device: torch.device, batch_size: Optional[int],
                 also_train_mode: bool = False) -> dict:
    """Evaluate a run folder's newest intact checkpoint in eval mode (and training mode with ``also_train_mode``)."""
    from .training import ConfigError, UnsafeCheckpoint, load
    from .training.records import list_checkpoints, load_latest
    from .training.run import build_network

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise EvaluateError(f"RUN_DIR={run_dir!r} has no config.yaml: not a run folder of jfb-train")
    try:
        cfg = load(yaml.safe_load((run / "config.yaml").read_text()))
    except ConfigError as e:
        raise EvaluateError(f"{run / 'config.yaml'}: {e} (written by another version of jfb?)") from None
    try:
        state = load_latest(run / "checkpoints", map_location=device)
    except UnsafeCheckpoint as e:
        raise EvaluateError(str(e)) from None
    if state is None:
        what = "none is intact" if list_checkpoints(run / "checkpoints") else "there is none"
        raise EvaluateError(f"RUN_DIR={run_dir!r}: no checkpoint to evaluate in {run / 'checkpoints'} ({what})")
    model = build_network(cfg, device)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise EvaluateError(f"{run / 'checkpoints'}: the checkpoint does not fit the network of {run / 'config.yaml'} "
                            f"({str(e).strip().splitlines()[0][:300]})") from None
    d = cfg.dataset
    data_dir = data_dir or str(run / cfg.paths.data_dir)  # the records keep it relative to the run folder
    loader = load_test_split(d.name, data_dir, batch_size or cfg.trainer.test_batch_size, device, d.source,
                             d.synthetic_size[1], d.verify)
    out = {"run_dir": str(run), "epoch": state.get("epoch"), "dataset": d.name, "source": d.source,
           "method": cfg.method.name, "params": sum(p.numel() for p in model.parameters()), "data_dir": data_dir,
           "batch_size": loader.batch_size, "device": str(device), "eval": evaluate_model(model, loader)}
    if also_train_mode:
        out["train_mode"] = evaluate_model(model, loader, train_mode=True)
    return out


def evaluate_authors(path: str, dataset: str, data_dir: str, device: torch.device, batch_size: int = 400,
                     also_train_mode: bool = False, trust_pickle: bool = False) -> dict:
    """Load a released file into our network (:func:`jfb.models.authors.load_authors_weights`) and evaluate it."""
    from .models.authors import load_authors_weights

    model, variant, content = load_authors_weights(path, dataset, trust_pickle=trust_pickle)
    hist = content.get("test_acc_hist") or []
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    out = {"file": os.path.basename(path), "sha256": digest, "dataset": dataset, "network": variant.describe(),
           "params": sum(p.numel() for p in model.parameters()), "recorded_acc": float(hist[-1]) if hist else None,
           "recorded_epochs": len(hist), "batch_size": batch_size, "device": str(device)}
    loader = load_test_split(dataset, data_dir, batch_size, device)
    model = model.to(device)
    out["eval"] = evaluate_model(model, loader)
    if also_train_mode:
        out["train_mode"] = evaluate_model(model, loader, train_mode=True)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jfb-evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", help="a run folder of jfb-train")
    p.add_argument("--authors-weights", metavar="FILE", help="one of the authors' released .pth files")
    p.add_argument("--dataset", help="with --authors-weights: mnist, svhn or cifar10")
    p.add_argument("--also-train-mode", action="store_true", help="also evaluate in training mode (labelled so)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of a released file that needs it (runs code from the file)")
    p.add_argument("--data-dir", help="data root (default: where the run found it; for --authors-weights "
                                      "$JFB_DATA_DIR or ./data)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--batch-size", type=int, help="test batch (default: the run's; 400 for a released file)")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    return p


def _run(a) -> dict:
    from .data import DATASETS
    from .env import resolve_device

    if bool(a.run_dir) == bool(a.authors_weights):
        raise EvaluateError("give exactly one of RUN_DIR or --authors-weights FILE")
    for flag, value in (("--batch-size", a.batch_size), ("--threads", a.threads)):
        if value is not None and value < 1:
            raise EvaluateError(f"{flag}={value} must be >= 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        device = resolve_device(a.device)
    except (RuntimeError, ValueError) as e:
        raise EvaluateError(f"--device={a.device!r}: {e}; use --device cpu") from None
    if a.run_dir:
        if a.dataset or a.trust_pickle:
            raise EvaluateError("--dataset and --trust-pickle apply to --authors-weights, not to RUN_DIR")
        out = evaluate_run(a.run_dir, a.data_dir, device, a.batch_size, a.also_train_mode)
        print(f"run: {out['run_dir']} (checkpoint of epoch {out['epoch']}; {out['dataset']}, method {out['method']}, "
              f"{out['params']:,} parameters)")
    else:
        if a.dataset not in DATASETS:
            raise EvaluateError(f"--dataset={a.dataset!r}: with --authors-weights give one of {sorted(DATASETS)}")
        data_dir = a.data_dir or os.environ.get("JFB_DATA_DIR") or "data"
        out = evaluate_authors(a.authors_weights, a.dataset, data_dir, device, a.batch_size or 400,
                               a.also_train_mode, a.trust_pickle)
        out["data_dir"], out["source"] = data_dir, "torchvision"
        print(f"file: {a.authors_weights}\nnetwork: {out['network']}; {out['params']:,} parameters")
        if out["recorded_acc"] is not None:
            print(f"recorded in the file: {out['recorded_acc']:.2f} % (last of {out['recorded_epochs']} entries of "
                  "test_acc_hist)")
    print(f"test set: {out['dataset']} ({out['source']}) in {out['data_dir']}, batch {out['batch_size']}, "
          f"{out['device']}")
    for key, label in (("eval", "eval mode"), ("train_mode", TRAIN_MODE_LABEL)):
        if key in out:
            r = out[key]
            print(f"{label}: {r.line()}")
            if r.capped:
                print(f"warning: {label}: {r.capped} of {r.batches} batches hit the solver's max_iter without meeting "
                      "its tolerance; this accuracy comes from unconverged fixed points", file=sys.stderr)
            out[key] = r.as_dict()
    return out


def main(argv=None) -> None:
    from .data import DatasetNotFoundError
    from .models.authors import AuthorsFileError

    a = _parser().parse_args(argv)
    try:
        out = _run(a)
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=1))
        code = 0
    except (EvaluateError, AuthorsFileError, DatasetNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
