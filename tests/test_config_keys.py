"""Every key of the config is read by the code that trains, or declared informational with its reason.

Each preset (experiment=paper/<dataset>, and none) with each method, and each other option of the
config groups, is composed as `jfb.train` composes it and trained for one batch of synthetic data by
the real training code (`jfb.training.run_training`, in this process), on a resolved config that
notes the dotted path of every value the code reads. What keeps records does not count as reading: the run's
identity (hash), config.yaml and the W&B config take the whole config. Validation runs but does not
count either: a key that is only validated changes nothing. A leaf nobody reads fails the test by name.
"""
from __future__ import annotations

import contextlib

import pytest
import torch
from cli import compose

from jfb.training import resume, session, validate

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
    "preset": "whose per-method settings configs/method/*.yaml take (the ${jfb.paper:...} resolver), read at "
              "composition",
    "method.implicit": "the method's default for model.implicit, which configs/model/*.yaml interpolate",
    "method.latent_bn": "the method's default for model.latent_bn, which configs/model/*.yaml interpolate",
}


# Keys read only in some configs, each with when; the test requires each to be read in one of them.
CONDITIONAL = {
    "resume": "read when the run folder already holds a run's records",
    **{k: "read when the network is implicit (method=explicit has no fixed point to solve)"
       for k in ("method.options", "solver.name", "solver.stop", "solver.residual", "solver.options")},
    **{f"diagnostics.{k}": "read when diagnostics.every is set (diagnostics=none keeps the defaults for "
                            "diagnostics.every=N)" for k in ("tol", "max_iter", "backward", "norm_iters", "norm_tol",
                                                             "per_sample")},
}


class Recorder(dict):
    """A resolved config node that notes, in ``seen``, the dotted path of every leaf value read from it
    (a value that is not a mapping, or an empty mapping). Iteration, ``items()``, ``dict(node)`` and
    ``{**node}`` read every value."""

    def __init__(self, data: dict, seen: set, path: str = ""):
        super().__init__({k: Recorder(v, seen, f"{path}{k}.") if isinstance(v, dict) else v for k, v in data.items()})
        self._seen, self._path = seen, path

    def _note(self, key, value):
        if not isinstance(value, Recorder) or not value:
            self._seen.add(f"{self._path}{key}")
        return value

    def __getitem__(self, key):
        return self._note(key, dict.__getitem__(self, key))

    def get(self, key, default=None):
        return self[key] if dict.__contains__(self, key) else default

    def __iter__(self):  # overriding it sends dict(node) and {**node} through keys() and __getitem__
        return iter(dict.keys(self))

    def items(self):
        return [(k, self[k]) for k in dict.keys(self)]

    def values(self):
        return [self[k] for k in dict.keys(self)]


def plain(node):
    """The recorded config as plain dicts, reading nothing."""
    return {k: plain(v) for k, v in dict.items(node)} if isinstance(node, dict) else node


def leaves(cfg: dict, path: str = "") -> set:
    out = set()
    for k, v in cfg.items():
        out |= leaves(v, f"{path}{k}.") if isinstance(v, dict) and v else {f"{path}{k}"}
    return out


@contextlib.contextmanager
def reads_of_training_only():
    """Validation and record keeping in jfb/training/session.py see plain dicts (their reads are not
    counted); W&B is built and reads its settings but logs nothing; the cuDNN flags a run sets are
    restored."""
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "disabled")
    for module, name in ((session, "validate"), (session, "portable_paths"), (session, "identity"),
                         (session, "run_hash"), (resume, "identity")):
        original = getattr(module, name)
        mp.setattr(module, name, lambda cfg, *a, _f=original, **k: _f(plain(cfg), *a, **k))
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        mp.undo()
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def train_and_record(cfg: dict, folder, seen: set):
    summary = session.run_training(Recorder(cfg, seen), folder)
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
            cfg, seen = compose(*variant, *TINY), set()
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


def test_a_key_nobody_reads_is_caught(tmp_path, one_thread):
    cfg, seen = compose("+trainer.nobody_reads_this=1", *TINY), set()
    validate(cfg)
    with reads_of_training_only():
        train_and_record(cfg, tmp_path, seen)
    assert leaves(cfg) - seen - set(INFORMATIONAL) - set(CONDITIONAL) == {"trainer.nobody_reads_this"}
