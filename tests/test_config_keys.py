"""Every setting of the schema is read by the code that trains, or declared informational with its reason; a key
the schema does not declare never reaches a run (tests/test_bad_input.py refuses it through the entry point).

Each preset (experiment=paper/<dataset>, and none) with each method, and each other option of the config groups,
is composed as `jfb.train` composes it, checked by the schema (`jfb.training.load`) and trained for one batch of
synthetic data by the real training code (`jfb.training.run_training`, in this process), on a config that notes
the dotted path of every setting the code reads. What keeps records does not count as reading: the run's identity
(hash), config.yaml and the W&B config take the whole config. A field nobody reads fails the test by name.
"""
from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
from cli import compose

from jfb.training import config as schema
from jfb.training import load, run

EXPERIMENTS = ["paper/mnist", "paper/svhn", "paper/cifar10", None]
METHODS = ["jfb", "ift", "neumann", "unrolled", "explicit"]
# the other options of the groups the presets leave at their defaults
GROUP_OPTIONS = [("optimizer=sgd",), ("solver=anderson",), ("solver=broyden",), ("logger=none",),
                 ("diagnostics=every10",)]
# one batch of two synthetic samples, a short solve; none of these adds or removes a key
TINY = ("dataset.source=synthetic", "dataset.synthetic_size=[2,2]", "trainer.epochs=1", "trainer.max_batches=1",
        "trainer.batch_size=2", "trainer.test_batch_size=2", "solver.max_iter=2", "trainer.progress=false",
        "device=cpu")

# Keys the training code does not read, each with what it is for.
INFORMATIONAL = {
    "run_name": "the run folder's name, read by Hydra through hydra.run.dir and hydra.sweep.subdir "
                "(configs/train.yaml)",
    "paths.output_root": "where run folders go, read by Hydra through hydra.run.dir and hydra.sweep.dir, and "
                         "checked by jfb.train.OutputRootCheck before Hydra creates a folder",
    "method.implicit": "the method's default for model.implicit, which configs/model/paper.yaml interpolates",
    "method.latent_bn": "the method's default for model.latent_bn, which configs/model/paper.yaml interpolates",
    "optimizer.name": "chooses the optimizer's schema and class when the config is checked "
                      "(jfb.training.config.OPTIMIZERS)",
}

# Keys read only in some configs, each with when; the test requires each to be read in one of them.
CONDITIONAL = {
    "resume": "read when the run folder already holds a run's records",
    **{k: "read when the network is implicit (method=explicit has no fixed point to solve)"
       for k in ("method.options", "solver.name", "solver.stop", "solver.residual", "solver.options", "solver.tol",
                 "solver.max_iter")},
    **{f"diagnostics.{k}": "read when diagnostics.every is set (diagnostics=none keeps the defaults for "
                            "diagnostics.every=N)" for k in ("tol", "max_iter", "backward", "norm_iters", "norm_tol")},
}


def record_reads(node, seen: set, path: str = ""):
    """``node`` (a checked config) whose dataclass nodes note in ``seen`` the dotted path of every field read."""
    cls = type(node)

    class Recorded(cls):
        def __getattribute__(self, name):
            value = object.__getattribute__(self, name)
            if name in cls.__dataclass_fields__ and not isinstance(value, Recorded.__mro__[0]) and not getattr(
                    Recorded, "paused", False):
                if not dataclasses.is_dataclass(value):
                    seen.add(f"{path}{name}")
            return value

    values = {}
    for f in dataclasses.fields(node):
        v = getattr(node, f.name)
        values[f.name] = record_reads(v, seen, f"{path}{f.name}.") if dataclasses.is_dataclass(v) else v
    out = object.__new__(Recorded)
    out.__dict__.update(values)
    return out


@contextlib.contextmanager
def reads_of_training_only():
    """Records (config.yaml, identity, the W&B config) read the whole config: those reads are not counted. The
    cuDNN flags a run sets are restored."""
    paused = []
    original = schema.RunConfig.to_dict

    def to_dict(self):
        paused.append(1)
        try:
            return {f.name: _plain(object.__getattribute__(self, f.name)) for f in dataclasses.fields(self)}
        finally:
            paused.pop()

    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "disabled")
    mp.setattr(schema.RunConfig, "to_dict", to_dict)
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        mp.undo()
        assert original is schema.RunConfig.to_dict
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def _plain(v):
    if dataclasses.is_dataclass(v):
        return {f.name: _plain(object.__getattribute__(v, f.name)) for f in dataclasses.fields(v)}
    return v


def leaves(node, path: str = "") -> set:
    out = set()
    for f in dataclasses.fields(node):
        v = getattr(node, f.name)
        out |= leaves(v, f"{path}{f.name}.") if dataclasses.is_dataclass(v) else {f"{path}{f.name}"}
    return out


def train_and_record(cfg, folder, seen: set):
    summary = run.run_training(record_reads(cfg, seen), folder)
    assert summary.status == "completed", summary.reason
    return summary


@pytest.fixture(scope="module")
def configs_and_reads(tmp_path_factory, one_thread):
    """{variant: (its leaf keys, the keys the training code read)} over every variant."""
    variants = [(*((f"experiment={e}",) if e else ()), f"method={m}") for e in EXPERIMENTS for m in METHODS]
    variants += [(*g, "method=jfb") for g in GROUP_OPTIONS]
    out = {}
    with reads_of_training_only():
        for i, variant in enumerate(variants):
            cfg, seen = load(compose(*variant, *TINY)), set()
            folder = tmp_path_factory.mktemp("run")
            train_and_record(cfg, folder, seen)
            if i == 0:  # the same run again: `resume` is read where a run folder holds records
                assert train_and_record(cfg, folder, seen).epochs_completed == 1
            out[variant] = (leaves(cfg), seen)
    return out


def test_every_key_is_read_by_the_training_code_or_declared_informational(configs_and_reads):
    read_somewhere = set().union(*(seen for _, seen in configs_and_reads.values()))
    unread = {}
    for variant, (keys, seen) in configs_and_reads.items():
        for key in sorted(keys - seen - set(INFORMATIONAL)):
            if key in CONDITIONAL and key in read_somewhere:
                continue
            unread.setdefault(key, " ".join(variant))
    assert not unread, "config keys nobody reads (in the config given): " + "; ".join(
        f"{k} ({v})" for k, v in unread.items())


def test_the_declared_keys_exist_and_informational_ones_are_not_read(configs_and_reads):
    keys = set().union(*(k for k, _ in configs_and_reads.values()))
    read = set().union(*(seen for _, seen in configs_and_reads.values()))
    declared = set(INFORMATIONAL) | set(CONDITIONAL)
    assert declared <= keys, declared - keys  # no stale declaration
    assert not set(INFORMATIONAL) & read, set(INFORMATIONAL) & read  # read after all: not informational


def test_a_field_nobody_reads_is_caught():
    cfg, seen = load(compose(*TINY)), set()
    rec = record_reads(cfg, seen)
    assert rec.trainer.epochs == 1 and rec.dataset.name == "mnist"
    assert seen == {"trainer.epochs", "dataset.name"}
    assert "trainer.batch_size" in leaves(cfg) - seen
