"""Bad input through the real entry point: every case in CASES must fail at once with a
clear message that names the key (or file) and the fix, a non-zero exit status, no traceback, and
nothing written that looks like a result.

Exit status 1 is Hydra's own (an unknown key, group option or preset, rejected before the trainer
runs); 2 is the trainer's (a value, a combination, the data or the run folder). Run this file
(`python tests/test_bad_input.py`) to print the table for the README from what the cases print.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli import records, run_dirs
from fakedata import write_cifar10, write_mnist, write_svhn
from warm_cli import train

pytestmark = pytest.mark.faults

MAX_WALL_S = 30  # "within seconds", even on a loaded CI machine (a run that starts training takes longer)


@dataclass(frozen=True)
class Case:
    id: str
    what: str  # the kind of bad input, for the README table
    args: tuple[str, ...]  # overrides; {data} is the case's data folder
    code: int  # the exit status
    expect: tuple[str, ...]  # fragments of stderr: the key or file, what is wrong, the fix
    setup: str | None = None  # data or run-folder preparation (see _setup)
    env: dict = field(default_factory=dict)


CASES = [
    # unknown options (Hydra rejects them before the trainer runs: exit status 1)
    Case("typo-key", "unknown option (typo)", ("trainer.epoch=3",), 1,
         ("Could not override 'trainer.epoch'", "Key 'epoch' is not in struct")),
    Case("unknown-top-key", "unknown option", ("learning_rate=0.1",), 1,
         ("Could not override 'learning_rate'", "Key 'learning_rate' is not in struct")),
    Case("unknown-method", "unknown group option", ("method=nosuch",), 1,
         ("Could not find 'method/nosuch'", "Available options in 'method'", "jfb")),
    Case("unknown-solver", "unknown group option", ("solver=newton",), 1,
         ("Could not find 'solver/newton'", "anderson", "picard")),
    Case("unknown-experiment", "unknown preset", ("experiment=paper/imagenet",), 2,
         ("experiment=paper/imagenet is not a preset", "paper/cifar10, paper/mnist, paper/svhn")),
    Case("unknown-solver-option", "unknown option", ("+solver.options.foo=1",), 2,
         ("solver.options.foo is not an option of solver 'picard'", "its options are: precision, check_every")),
    # wrong types
    Case("epochs-str", "wrong type", ("trainer.epochs=abc",), 2,
         ("trainer.epochs='abc' is invalid", "expected an integer >= 1", "e.g. trainer.epochs=1")),
    Case("epochs-float", "wrong type", ("trainer.epochs=2.5",), 2,
         ("trainer.epochs=2.5 is invalid", "expected an integer >= 1")),
    Case("lr-str", "wrong type", ("optimizer.lr=fast",), 2,
         ("optimizer.lr='fast' is invalid", "expected a number > 0", "(learning rate)")),
    Case("bn-str", "wrong type", ("model.latent_bn=maybe",), 2,
         ("model.latent_bn='maybe' is invalid", "expected true or false")),
    # out of range
    Case("lr-negative", "out of range", ("optimizer.lr=-1",), 2, ("optimizer.lr=-1 is invalid", "> 0")),
    Case("tol-zero", "out of range", ("solver.tol=0",), 2, ("solver.tol=0 is invalid", "e.g. solver.tol=0.0001")),
    Case("max-iter-zero", "out of range", ("solver.max_iter=0",), 2, ("solver.max_iter=0 is invalid", ">= 1")),
    Case("gamma-one", "out of range", ("model.gamma=1",), 2,
         ("model.gamma=1 is invalid", "> 0 and < 1", "e.g. model.gamma=0.5")),
    Case("batch-zero", "out of range", ("trainer.batch_size=0",), 2, ("trainer.batch_size=0 is invalid",)),
    Case("capped-frac", "out of range", ("trainer.capped_fail_frac=2",), 2,
         ("trainer.capped_fail_frac=2 is invalid", "<= 1")),
    Case("seed-negative", "out of range", ("seed=-1",), 2, ("seed=-1 is invalid", ">= 0")),
    Case("anderson-m", "out of range", ("solver=anderson", "solver.options.m=0"), 2,
         ("solver.options.m=0 is invalid", ">= 1")),
    Case("synthetic-empty", "out of range", ("dataset.synthetic_size=[0,8]",), 2,
         ("dataset.synthetic_size=[0, 8] is invalid", "e.g. dataset.synthetic_size=[512,256]")),
    Case("device", "not a choice", ("device=gpu",), 2, ("device='gpu' is invalid", "auto, cpu, cuda or cuda:N")),
    Case("device-absent", "a device this machine lacks", ("device=cuda:7",), 2,
         ("device=cuda:7 was asked for", "use device=auto")),
    Case("stop", "not a choice", ("solver.stop=relative",), 2, ("solver.stop='relative' is invalid", "abs, rel")),
    Case("wandb-mode", "not a choice", ("logger=wandb", "logger.mode=sometimes"), 2,
         ("logger.mode='sometimes' is invalid", "online, offline, disabled")),
    Case("optimizer-name", "not a choice", ("optimizer.name=rmsprop",), 2,
         ("optimizer.name='rmsprop' is invalid", "adam, sgd")),
    Case("optimizer-option", "not an option", ("+optimizer.momentum=0.9",), 2,
         ("optimizer.momentum is not an option of optimizer=adam", "lr, weight_decay")),
    Case("val-size", "out of range", ("dataset.val_size=-1",), 2, ("dataset.val_size=-1 is invalid", ">= 0")),
    Case("val-size-all", "out of range", ("dataset.val_size=64",), 2,
         ("dataset.val_size=64 is invalid: expected 1 to 63",)),
    Case("diagnostics-every", "out of range", ("diagnostics.every=0",), 2, ("diagnostics.every=0 is invalid",)),
    Case("diagnostics-tol", "out of range", ("diagnostics.every=1", "diagnostics.tol=0"), 2,
         ("diagnostics.tol=0 is invalid", "> 0")),
    Case("diagnostics-explicit", "contradictory", ("method=explicit", "diagnostics.every=5"), 2,
         ("has no fixed point to diagnose", "diagnostics.every=null")),
    Case("callback-target", "not a callback", ("+callbacks.x._target_=collections.OrderedDict",), 2,
         ("callbacks.x built a OrderedDict, not a jfb.training.Callback",)),
    # contradictory settings
    Case("ift-bn-sample-cg", "contradictory", ("method=ift", "model.latent_bn=true", "method.options.cg_scope=sample"),
         2, ("method.options.cg_scope='sample' with model.latent_bn=true is contradictory",
             "Use method.options.cg_scope=batch, or model.latent_bn=false")),
    Case("unrolled-anderson", "contradictory", ("method=unrolled", "solver=anderson"), 2,
         ("method 'unrolled'", "solver='anderson' is not supported, use solver='picard'")),
    Case("neumann-terms", "out of range", ("method=neumann", "method.options.terms=-1"), 2,
         ("method.options.terms=-1 is invalid: expected an integer >= 0",)),
    Case("ift-backward", "not a choice", ("method=ift", "method.options.backward=lu"), 2,
         ("method.options.backward='lu' is invalid: expected one of", "cg, picard")),
    Case("explicit-options", "contradictory", ("method=explicit", "+method.options.terms=3"), 2,
         ("method.options={'terms': 3} given for an explicit network", "remove them")),
    Case("augment-mnist", "contradictory", ("dataset.augment=true",), 2,
         ("dataset.augment=True is invalid", "mnist has no training augmentation", "dataset.augment=null or false")),
    # missing or corrupted data (real torchvision classes on fake files in the real formats)
    Case("data-empty", "missing data", ("dataset.source=torchvision", "paths.data_dir={data}"), 2,
         ("dataset 'mnist' not found in data directory", "make data DATA_DIR=", "paths.data_dir"), "empty"),
    Case("data-file-missing", "missing data file", ("dataset.source=torchvision", "paths.data_dir={data}"), 2,
         ("missing MNIST/raw/t10k-labels-idx1-ubyte", "make data DATA_DIR="), "mnist-missing"),
    Case("data-truncated", "corrupted data file", ("dataset.source=torchvision", "paths.data_dir={data}"), 2,
         ("dataset 'mnist'", "is corrupted", "Delete them and download again"), "mnist-truncated"),
    Case("cifar-md5", "corrupted data (MD5 check on)", ("dataset=cifar10", "dataset.source=torchvision",
                                                       "paths.data_dir={data}"), 2,
         ("dataset 'cifar10'", "is corrupted", "MD5", "Delete them and download again"), "cifar-fake"),
    Case("svhn-test-missing", "missing data file", ("dataset=svhn", "dataset.source=torchvision",
                                                    "dataset.verify=false", "paths.data_dir={data}"), 2,
         ("dataset 'svhn' not found", "missing test_32x32.mat"), "svhn-train-only"),
    # the run folder
    Case("checkpoints-damaged", "every checkpoint damaged (truncated)", ("trainer.epochs=2",), 2,
         ("resume=true but no checkpoint in", "is intact", "Rerun with resume=false"), "damaged-checkpoint"),
    Case("output-root-file", "output root not writable", ("paths.output_root={data}/a_file/runs",), 2,
         ("paths.output_root=", "cannot be written", "Not a directory", "choose a writable folder"), "a-file"),
    Case("run-dir-file", "run folder not writable", ("hydra.run.dir={data}/a_file/run",), 2,
         ("hydra.run.dir=", "cannot be written", "choose a writable folder"), "a-file"),
]


def _setup(kind: str | None, data: Path, root: Path) -> None:
    if kind is None:
        return
    data.mkdir(parents=True, exist_ok=True)
    if kind == "mnist-missing":
        write_mnist(data, n_train=32, n_test=16)
        (data / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    elif kind == "mnist-truncated":
        write_mnist(data, n_train=32, n_test=16)
        p = data / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
        p.write_bytes(p.read_bytes()[:1000])
    elif kind == "cifar-fake":
        write_cifar10(data, n_train=20, n_test=10)  # right format, wrong MD5 sums (as a damaged download)
    elif kind == "svhn-train-only":
        write_svhn(data, n_train=20, n_test=10)
        (data / "test_32x32.mat").unlink()
    elif kind == "a-file":
        (data / "a_file").write_text("")
    elif kind == "damaged-checkpoint":
        p = train(root=root)  # one completed epoch, then its only checkpoint truncated
        assert p.returncode == 0, p.stderr[-2000:]
        for ck in (run_dirs(root)[0] / "checkpoints").glob("epoch_*.pt"):
            ck.write_bytes(ck.read_bytes()[:100])


def _snapshot(root: Path) -> dict:
    """The result-like files under ``root`` and their bytes."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.name in ("summary.json", "metrics.jsonl")}


def _run(case: Case, tmp: Path):
    data, root = tmp / "data", tmp / "runs"
    _setup(case.setup, data, root)
    before = _snapshot(root)
    args = [a.replace("{data}", str(data)) for a in case.args]
    return train(*args, root=root, env=case.env), before, root


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_fast_and_clearly(case, tmp_path):
    p, before, root = _run(case, tmp_path)
    assert p.returncode == case.code, (p.returncode, p.stderr[-2000:])
    for fragment in case.expect:
        assert fragment in p.stderr, (fragment, p.stderr[-2000:])
    assert "Traceback" not in p.stderr
    assert p.wall_s < MAX_WALL_S, p.wall_s
    assert _snapshot(root) == before  # nothing that looks like a result was written or changed
    if case.setup == "damaged-checkpoint":  # the refused run's records still read as before the rerun
        summary, metrics = records(run_dirs(root)[0])
        assert summary["status"] == "completed" and len(metrics) == 1
    if case.code == 2:
        assert "\nerror: " in "\n" + p.stderr and "run failed" not in p.stderr


def markdown_table(tmp: Path) -> str:
    """The README table: each case as it runs now (input | message | exit status)."""
    lines = ["| input | message | exit |", "|---|---|---|"]
    for i, case in enumerate(CASES):
        p, _, _ = _run(case, tmp / str(i))
        msg = " ".join(line.strip() for line in p.stderr.strip().splitlines()
                       if line.strip() and not line.startswith("Set the environment variable HYDRA_FULL_ERROR"))
        msg = msg.replace(str(tmp / str(i)), "…").replace("|", "\\|")
        shown = " ".join(f"`{a}`" for a in case.args).replace(str(tmp / str(i)), "…")
        extra = {"empty": " (empty data folder)", "mnist-missing": " (one MNIST file deleted)",
                 "mnist-truncated": " (MNIST file truncated)", "cifar-fake": " (files failing the MD5 check)",
                 "svhn-train-only": " (test file absent)", "damaged-checkpoint": " after a completed epoch whose "
                 "checkpoint is truncated", "a-file": " (a file in the way)"}.get(case.setup, "")
        lines.append(f"| {case.what}: {shown}{extra} | {msg} | {p.returncode} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(markdown_table(Path(d)))
