"""The training loop in-process, on toy models: no host read per step, memory measured on untimed copies
of the right steps, non-finite losses caught on the device and named by their step."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jfb.core import SolverStats
from jfb.training.loop import NonFiniteWatch, RunFailed, SavedTensorBytes, Trainer, TrainerSettings

pytestmark = pytest.mark.usefixtures("one_thread")


class Loader:
    """Batches of 8 samples of 4 features; sample [0, 0] of each batch sets the toy model's depth."""

    batch_size = 8

    def __init__(self, depths, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.batches = []
        for d in depths:
            x = torch.randn(8, 4, generator=g)
            x[0, 0] = d
            self.batches.append((x, torch.randint(0, 3, (8,), generator=g)))

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class Deep(nn.Module):
    """``depth`` applications of a layer with autograd (depth from the batch), dropout on the way out:
    it saves more for backward the deeper it goes, as unrolled backpropagation does."""

    def __init__(self, implicit=True):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.out, self.drop = nn.Linear(4, 4), nn.Linear(4, 3), nn.Dropout(0.3)
        self.implicit = implicit

    def forward(self, x):
        depth = int(x[0, 0])
        h = x
        for _ in range(depth):
            h = torch.tanh(self.lin(h))
        stats = SolverStats("toy", "toy", 50, 1e-4, fwd_iters=depth, fwd_residual=0.0, fwd_converged=True)
        return self.out(self.drop(h)), (stats if self.implicit else None)


def trainer(model, depths, **settings):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return Trainer(model, opt, torch.optim.lr_scheduler.StepLR(opt, 1, 1.0), Loader(depths), Loader([1]),
                   torch.device("cpu"), TrainerSettings(epochs=1, **settings))


def saved_bytes(model, x, y):
    with SavedTensorBytes() as s:
        F.cross_entropy(model(x)[0], y)
    return s.bytes


def test_memory_is_that_of_the_deepest_step_measured_on_copies_that_change_nothing():
    depths = [2, 1, 5, 3, 5, 4]
    t = trainer(Deep(), depths)
    row = t.train_epoch(1)
    deepest = saved_bytes(Deep(), *Loader([5]).batches[0])
    assert row["saved_for_backward_mb"] == deepest / 2**20
    assert saved_bytes(Deep(), *Loader([2]).batches[0]) < deepest  # the first step alone would say less
    # the same numbers as a loop without the measurements: parameters, losses, random stream
    ref = Deep()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    torch.manual_seed(0)
    t2 = trainer(Deep(), depths)
    torch.manual_seed(0)
    row2 = t2.train_epoch(1)
    after_t2 = torch.rand(3)
    torch.manual_seed(0)
    losses = []
    for x, y in Loader(depths):
        opt.zero_grad()
        loss = F.cross_entropy(ref(x)[0], y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert torch.equal(torch.rand(3), after_t2)  # the copies drew from forked streams only
    for p, q in zip(ref.parameters(), t2.model.parameters()):
        assert torch.equal(p, q)
    assert row2["train_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-12)


def test_memory_steps_are_counted_out_of_the_epoch_time(monkeypatch):
    entered = []
    real_enter = SavedTensorBytes.__enter__

    def enter(self):
        entered.append(1)
        return real_enter(self)

    monkeypatch.setattr(SavedTensorBytes, "__enter__", enter)
    t = trainer(Deep(), [2, 1, 5, 3, 5, 4])
    t.train_epoch(1)
    # hooks only around the measured copies (first step, then depth 5): forward and backward each
    assert len(entered) == 4
    assert t.probe_time[0] > 0 and t.probe_time[1] > 0  # wall and CPU seconds, kept out of the epoch


def test_no_host_read_per_step(monkeypatch):
    """What the loop reads from tensors on the host does not grow with the number of steps (the toy
    model has no solver, and no log_step or progress bar is asked for)."""
    reads = []
    for name in ("item", "__float__", "__int__", "__bool__"):
        real = getattr(torch.Tensor, name)

        def wrapped(self, *a, _real=real, _name=name):
            reads.append(_name)
            return _real(self, *a)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    counts = []
    for n in (2, 8):
        reads.clear()
        trainer(Deep(), [1] * n).train_epoch(1)
        # minus the toy model's own reads of its depth (int(x[0, 0])): each step's, and the measured copy's
        counts.append(len(reads) - (n + 1))
    assert counts[0] == counts[1], counts


@pytest.mark.parametrize("implicit", [True, False])
def test_a_non_finite_loss_names_its_step_though_the_host_reads_it_later(implicit):
    class NanAt(Deep):
        def forward(self, x):
            logits, st = super().forward(x)
            return (logits * float("nan") if float(x[0, 1]) > 100 else logits), st

    loader = Loader([1, 1, 1, 1, 1])
    loader.batches[2][0][0, 1] = 1000.0  # batch 3
    t = trainer(NanAt(implicit=implicit), [1])
    t.train_loader = loader
    with pytest.raises(RunFailed, match=r"non-finite training loss \(nan\) at epoch 4, batch 3;"):
        t.train_epoch(4)


def test_a_non_finite_loss_is_named_when_something_else_stops_the_epoch():
    class Fails(Deep):
        calls = 0

        def forward(self, x):
            logits, st = super().forward(x)
            Fails.calls += 1
            if Fails.calls == 5:  # call 1 is the memory copy of step 1: this is step 4
                raise ZeroDivisionError("a later failure")
            return logits * (float("inf") if Fails.calls == 3 else 1.0), st  # step 2

    t = trainer(Fails(), [1, 1, 1, 1])
    with pytest.raises(RunFailed, match=r"non-finite training loss \((nan|inf)\) at epoch 1, batch 2;") as e:
        t.train_epoch(1)
    assert isinstance(e.value.__context__, ZeroDivisionError)


def test_non_finite_watch_keeps_the_first_step_and_its_value():
    w = NonFiniteWatch(torch.device("cpu"))
    assert w.first() is None
    for step, v in enumerate([0.5, 2.0, float("inf"), float("nan"), 1.0], start=1):
        w.add(torch.tensor(v), step)
    assert w.first() == (3, math.inf)


# ------------------------------------------------------------------------ the Lipschitz probe's schedule

def test_the_trainer_passes_the_run_step_count_to_after_step():
    seen = []

    class Spy(Deep):
        def after_step(self, step=None):
            seen.append(step)
            return {}

    t = trainer(Spy(), [1, 1, 1])
    t.train_epoch(1)
    t.train_epoch(2)
    assert seen == [0, 1, 2, 3, 4, 5]  # a resumed run restores global_step, so its probes fall alike


def _mnist(every):
    from jfb.models import build_model

    torch.manual_seed(0)
    return build_model("mnist", contraction_every=every,
                       fixed_point_options=dict(method="jfb", tol=1e-2, max_iter=30, residual="pixel"))


def test_lipschitz_probe_runs_every_kth_step_and_skipped_steps_draw_nothing():
    m = _mnist(3)
    x = torch.randn(4, 1, 28, 28)
    probed = []
    for step in range(7):
        m(x)
        state = torch.random.get_rng_state()
        info = m.after_step(step=step)
        if info:
            probed.append(step)
            assert set(info) == {"lip_rescaled", "lip_ratio_max", "lip_factor_min"}
        else:
            assert torch.equal(torch.random.get_rng_state(), state)  # no noise drawn, no R applied
    assert probed == [0, 3, 6]
    own = _mnist(2)  # without a step from the caller: its own count of training steps
    out = []
    for _ in range(5):
        own(x)
        out.append(bool(own.after_step()))
    assert out == [True, False, True, False, True]


def test_lipschitz_probe_every_step_by_default_and_bad_schedules_refused():
    from jfb.models.contraction import make_contraction
    from cli import compose

    from jfb.training import ConfigError, load

    m = _mnist(1)
    x = torch.randn(4, 1, 28, 28)
    for step in range(3):
        m(x)
        assert m.after_step(step=step)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="every"):
            make_contraction("lipschitz", every=bad)
    assert make_contraction("spectral", every=5).name == "spectral"  # no probe: nothing to schedule
    cfg = compose("model.contraction_every=0")
    with pytest.raises(ConfigError, match="model.contraction_every=0"):
        load(cfg)
    assert load(compose("model.contraction_every=4")).model.contraction_every == 4
