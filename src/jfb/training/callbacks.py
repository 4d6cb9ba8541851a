"""Callbacks: code that joins a run at fixed points without the training loop knowing what it does.

A callback subclasses :class:`Callback` and overrides the hooks it needs. Callbacks come from the
``callbacks`` node of the config (``+callbacks.NAME._target_=module.Class`` plus its arguments,
instantiated by Hydra) or are passed to :func:`jfb.training.run_training` directly. Time spent in
:meth:`Callback.after_backward` (the only hook inside a training step) is measured apart and kept out
of the epoch's training time (``callback_time_s`` in the records). Callbacks are not part of a
run's identity: one that changes the numbers must be given its own ``hydra.run.dir``.
"""
from __future__ import annotations

from pathlib import Path

import torch


class Callback:
    def on_run_start(self, trainer, run_dir: Path) -> None:
        """Before the first epoch of this process (after a resume, at the epoch resumed from)."""

    def on_epoch_start(self, trainer, epoch: int) -> None:
        """Before an epoch's training batches."""

    def before_forward(self, trainer, x: torch.Tensor, y: torch.Tensor) -> None:
        """Before a training step's forward pass."""

    def on_loss(self, trainer, loss: torch.Tensor) -> torch.Tensor:
        """The training loss of a step, before backward; returns the loss to use."""
        return loss

    def after_backward(self, trainer, x: torch.Tensor, y: torch.Tensor, loss: torch.Tensor, stats) -> None:
        """After backward, before the optimizer step (gradients are in ``p.grad``)."""

    def on_eval_batch(self, trainer) -> None:
        """After each evaluation batch."""

    def before_checkpoint_write(self, epoch: int, path: Path, data: bytes) -> None:
        """Before a checkpoint's bytes are written (atomically) to ``path``."""

    def on_epoch_end(self, trainer, row: dict) -> None:
        """After an epoch's evaluation, before its records are written; may add keys to ``row``."""


def instantiate_callbacks(node: dict | None) -> list[Callback]:
    """Callbacks from the config's ``callbacks`` node (name -> {_target_: ..., args}); entries set to
    null are skipped."""
    if not node:
        return []
    from hydra.utils import instantiate

    out = []
    for name, spec in node.items():
        if spec is None:
            continue
        cb = instantiate(spec)
        if not isinstance(cb, Callback):
            from .validate import ConfigError

            raise ConfigError(f"callbacks.{name} built a {type(cb).__name__}, not a jfb.training.Callback; "
                              "its _target_ must name a Callback subclass")
        out.append(cb)
    return out
