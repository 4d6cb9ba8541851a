"""The paper preset's Jacobian-based step against the authors' code, batch for batch.

Usage::

    python scripts/compare_authors_cg.py --authors-git-dir GIT_DIR [--commit HEAD] [--data-dir D]
        [--datasets mnist,svhn,cifar10] [--batch 100] [--dtype float64] [--history-iters 30]
        [--out results/bench/authors-cg-comparison]
    python scripts/compare_authors_cg.py --authors-dir CHECKOUT ...
    python scripts/compare_authors_cg.py --render OUT.json   # re-write OUT.md from a previous run

GIT_DIR is a (bare) git directory of github.com/Typal-Research/jacobian_free_backprop; its
``Networks.py``, ``utils.py`` and ``BatchCG.py`` at ``--commit`` are written to a temporary folder and
imported from there (CHECKOUT: a folder holding those three files, copied the same way). This file
holds none of their code.

For each dataset's Jacobian-based network (no latent batch norm; the authors' driver settings:
MNIST ``MNIST_FPN`` 2 latent blocks, gamma 0.5; SVHN ``SVHN_FPN`` 1 block, gamma 0.9; CIFAR-10
``CIFAR10_FPN`` 5 blocks, 16 data layers, gamma 0.5; all ``architecture='Jacobian'``), one batch
(MNIST: the first ``--batch`` training images when ``--data-dir`` has MNIST, else random; SVHN and
CIFAR-10: random N(0, 1) 3x32x32 images and random labels), one set of weights:

* theirs: their class, initialised with ``torch.manual_seed(--seed)``, run through their own
  ``utils.train_Jacobian_based_net`` for one epoch over a loader holding that one batch (their
  fixed point ``compute_fixed_point``, the adjoint by their ``BatchCG.cg_batch`` with X0 = rhs,
  rtol 0, atol = eps, maxiter = max_depth, then ``Ru.backward(x)`` and the separate S pass, the
  update only if ``info['optimal']``; the authors' code). The loop is not modified:
  ``compute_fixed_point`` and ``cg_batch`` are wrapped in their module to record what they return
  (and, for ``--history-iters``, to run ``cg_batch`` once more on the same system with an
  unreachable tolerance, ``verbose=True``, reading the residual it prints per iteration), and the
  optimizer is ``SGD(lr=0)`` with a step pre-hook that records every parameter's gradient.
* ours: ``jfb.models.build_model(dataset, latent_bn=False, fixed_point_options=
  jfb.paper.fixed_point_options(dataset, "ift"))`` (the paper preset's ``method=ift``: per-sample CG
  from the right-hand side, per-sample stopping norm; CIFAR-10 at 1e-4 / 500), loaded with their
  weights (:func:`jfb.models.authors.paper_to_ours`), one training step's forward and
  ``loss.backward()``. The gamma and contraction control are the authors' (for SVHN the preset's
  ``method=ift`` deviates, gamma 0.45 with spectral norm; the comparison restores theirs, as
  ``model.contraction=lipschitz model.gamma=0.9`` does). Our Lipschitz control acts after the
  optimizer step only (jfb/models/contraction.py), so one step's gradients do not depend on it.

Made identical on both sides, and reported:

* dropout: every dropout rate is set to 0 in both networks (the identity, as in eval mode; their
  loop calls ``net.train()`` each batch, so switching the modules to eval would be undone). Their Q
  runs twice per batch, and their S pass that gives S its gradient is a separate one: with masks
  drawn they could not agree with ours. Batch norm in Q stays in training mode (batch statistics)
  in both, as in training.
* the Lipschitz rescale: their ``compute_fixed_point`` calls ``normalize_lip_const(0, Q(d))``
  before its loop. It is applied once, by their code, to the shared weights before the comparison
  (``torch.manual_seed(--seed)`` before its noise draw); then it is disabled in their network for
  the step, and ours gets the rescaled weights. Their step is therefore exactly what it would have
  been with the rescale inside, with the same noise.
* precision: ``--dtype float64`` (default) converts both networks and the batch to float64 and sets
  torch's default dtype to it while their code runs (their code allocates its iterates with the
  default dtype and hard-codes no precision).

Compared: forward iterations (their ``depth``, our ``fwd_iters``) and the fixed point; CG iterations
(their ``info['niter']``, our ``bwd_iters``); convergence (``info['optimal']``, ``bwd_converged``); the
CG solution x (their ``normal_eq_sol``, our adjoint w); and the update: every parameter's gradient
(max abs and relative difference, relative to the largest entry of theirs). Writes ``OUT.json`` and
``OUT.md`` (``--out``, default results/bench/authors-cg-comparison) and exits 1 when a dataset
differs (iterations, convergence, or a relative difference above ``--rtol``).

Shims, each printed and recorded when used: NumPy 2 has no ``np.Inf`` (their code uses it), so it is
aliased to ``np.inf``; ``prettytable`` (their loop prints a parameter table with it) is replaced by a
minimal table if not installed.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import importlib.util
import io
import json
import math
import re
import shlex
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from authors_files import copy_files  # noqa: E402  (scripts/authors_files.py)

FILES = ("Networks.py", "utils.py", "BatchCG.py")
DATASETS = ("mnist", "svhn", "cifar10")
# The authors' Jacobian-based drivers pass JTJ_shift 1e-1 (SVHN, CIFAR-10) or nothing (MNIST, default 0);
# their loop never uses it (the authors' code; docs/deviations.md). Passed as the drivers do.
JTJ_SHIFT = {"mnist": 0.0, "svhn": 1e-1, "cifar10": 1e-1}
# Table 2 of the paper (the paper): mat-vec counts of the Jacobian-based runs, and the
# run lengths of the authors' drivers (the authors' code; docs/deviations.md) with the training-set sizes.
TABLE2_MATVECS = {"mnist": 6.0e6, "svhn": 1.4e7, "cifar10": 9.7e8}
DRIVER_EPOCHS = {"mnist": 100, "svhn": 100, "cifar10": 1000}
TRAIN_SIZE = {"mnist": 60_000, "svhn": 73_257, "cifar10": 50_000}


# --------------------------------------------------------------------------- their code
def materialise(a, folder: Path) -> str:
    """Their three files in ``folder``; returns where they came from."""
    return copy_files(FILES, folder, a.authors_git_dir, a.commit, a.authors_dir, "--authors-dir", short=True)


class _Table:
    """Stands in for prettytable.PrettyTable (their loop only prints it)."""

    def __init__(self, fields):
        self.rows = [list(fields)]

    def add_row(self, row):
        self.rows.append(list(row))

    def __str__(self):
        return "\n".join(" | ".join(str(c) for c in r) for r in self.rows)


def shims(notes: list) -> None:
    import numpy

    if not hasattr(numpy, "Inf"):
        numpy.Inf = numpy.inf
        notes.append("numpy.Inf aliased to numpy.inf (removed in NumPy 2; their code uses it)")
    try:
        import prettytable  # noqa: F401
    except ImportError:
        stub = types.ModuleType("prettytable")
        stub.PrettyTable = _Table
        sys.modules["prettytable"] = stub
        notes.append("prettytable replaced by a minimal table (not installed; their loop prints a parameter table)")


MODULES = ("BatchCG", "Networks", "utils")


@contextlib.contextmanager
def authors_modules(folder: Path):
    """Their modules, imported from ``folder`` under their own names (``utils`` does ``from BatchCG
    import cg_batch``); whatever held those names in ``sys.modules`` before is put back afterwards."""
    saved = {name: sys.modules.pop(name) for name in MODULES if name in sys.modules}
    sys.path.insert(0, str(folder))
    try:
        mods = {name: importlib.import_module(name) for name in MODULES}
        yield types.SimpleNamespace(batchcg=mods["BatchCG"], networks=mods["Networks"], utils=mods["utils"])
    finally:
        sys.path.remove(str(folder))
        for name in MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def their_net(networks, dataset: str, gamma: float):
    """Their network as their Jacobian-based driver builds it (the authors' code; docs/deviations.md)."""
    from jfb.models import MODELS

    spec = MODELS[dataset]
    channels = spec.latent_shape[0]
    if dataset == "mnist":
        return networks.MNIST_FPN(lat_layers=spec.lat_layers, num_channels=channels, contraction_factor=gamma,
                                  architecture="Jacobian")
    if dataset == "svhn":
        return networks.SVHN_FPN(lat_layers=spec.lat_layers, num_channels=channels, contraction_factor=gamma,
                                 block=networks.BasicBlock, num_blocks=[1, 1, 1], architecture="Jacobian")
    from jfb.models.cifar10 import DATA_LAYERS

    return networks.CIFAR10_FPN(lat_layers=spec.lat_layers, num_channels=channels, contraction_factor=gamma,
                                data_layers=DATA_LAYERS, architecture="Jacobian")


def zero_dropout(net) -> int:
    """Every dropout rate to 0 (the identity); returns how many modules were changed."""
    import torch

    n = 0
    for m in net.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p != 0:
            m.p = 0.0
            n += 1
    return n


_VERBOSE_LINE = re.compile(r"^\s*(\d+)\s*\|\s*([-+0-9.eEinfa]+)(?:\s|$)")
_EPOCH_LINE = re.compile(r"depth\s*=\s*([0-9.]+).*n_Umatvecs\s*=\s*(\d+)\s*\|\s*cg\s*=\s*([-+0-9.eE]+)")
HISTORY_ATOL = 1e-300  # unreachable: the history run stops at its iteration cap


def their_step(mods, net, d, labels, dataset: str, eps: float, max_depth: int, history_iters: int,
               save_dir: Path) -> dict:
    """One epoch of their ``train_Jacobian_based_net`` over a loader holding the one batch."""
    import torch

    utils = mods.utils
    rec: dict = {}
    real_fp, real_cg = utils.compute_fixed_point, utils.cg_batch

    def fixed_point(T, Qd, max_depth, device, eps=1e-4):
        u, depth = real_fp(T, Qd, max_depth, device, eps=eps)
        rec.setdefault("fixed_point", (u.detach().clone(), depth))
        return u, depth

    def cg_batch(A_bmm, B, *args, **kwargs):
        calls = [0]

        def counted(v):
            calls[0] += 1
            return A_bmm(v)

        t0 = time.perf_counter()
        x, info = real_cg(counted, B, *args, **kwargs)
        seconds = time.perf_counter() - t0
        if "cg" not in rec:
            rec["cg"] = dict(x=x.detach().clone(), info=dict(info), A_bmm_calls=calls[0], seconds=seconds,
                             b_norm_max=float(B.norm(dim=1).max()), kwargs={k: v for k, v in kwargs.items()
                                                                             if k != "M_bmm"})
            if history_iters:
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    real_cg(A_bmm, B, M_bmm=None, X0=None, rtol=0, atol=HISTORY_ATOL, maxiter=history_iters,
                            verbose=True)
                hist = [float(m.group(2)) + HISTORY_ATOL for m in map(_VERBOSE_LINE.match, buf.getvalue().splitlines())
                        if m]
                rec["cg"]["history"] = hist or None
        return x, info

    params = dict(net.named_parameters())
    opt = torch.optim.SGD(net.parameters(), lr=0.0)

    def record_grads(optimizer, args, kwargs):
        rec["grads"] = {n: None if p.grad is None else p.grad.detach().clone() for n, p in params.items()}

    opt.register_step_pre_hook(record_grads)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=1.0)
    ds = torch.utils.data.TensorDataset(d, labels)
    train = torch.utils.data.DataLoader(ds, batch_size=len(d), shuffle=False)
    test = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(d[:2], labels[:2]), batch_size=2)
    out = io.StringIO()
    utils.compute_fixed_point, utils.cg_batch = fixed_point, cg_batch
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            utils.train_Jacobian_based_net(net, 1, sched, train, test, opt, torch.nn.CrossEntropyLoss(), 10, eps,
                                           max_depth, save_dir=str(save_dir) + "/", JTJ_shift=JTJ_SHIFT[dataset])
    except Exception:
        sys.stderr.write(out.getvalue()[-3000:])
        raise
    finally:
        utils.compute_fixed_point, utils.cg_batch = real_fp, real_cg
    rec["seconds"] = time.perf_counter() - t0
    if "fixed_point" not in rec or "cg" not in rec:
        raise SystemExit(f"error: their train_Jacobian_based_net did not call compute_fixed_point and cg_batch "
                         f"through its module globals; output:\n{out.getvalue()[-2000:]}")
    m = None
    for line in out.getvalue().splitlines():
        m = _EPOCH_LINE.search(line) or m
    rec["logged"] = None if m is None else {"depth": float(m.group(1)), "n_Umatvecs": int(m.group(2)),
                                           "cg_iters": float(m.group(3))}
    return rec


# --------------------------------------------------------------------------- our code
def our_step(model, d, labels) -> dict:
    """One training step's forward and backward of our model (no optimizer step)."""
    import torch
    import torch.nn.functional as F

    import jfb.core.methods as methods
    from jfb.core import capture_fixed_points

    rec: dict = {}
    real = methods.solve_cg

    def solve_cg(g, prod, tol, max_iter, residual, stop, **kw):
        r = real(g, prod, tol, max_iter, residual, stop, **kw)
        rec.setdefault("cg", dict(w=r.w.detach().clone(), tol=tol, max_iter=max_iter, residual=residual, stop=stop,
                                  options=dict(kw)))
        return r

    methods.solve_cg = solve_cg
    t0 = time.perf_counter()
    try:
        model.train()
        model.zero_grad(set_to_none=True)
        with capture_fixed_points() as records:
            logits, stats = model(d)
            F.cross_entropy(logits, labels).backward()
    finally:
        methods.solve_cg = real
    rec["seconds"] = time.perf_counter() - t0
    rec["stats"] = stats
    rec["z_star"] = records[0].z_star
    rec["grads"] = {n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()}
    if "cg" not in rec:
        raise SystemExit("error: our step did not run CG (is method=ift with backward=cg?)")
    return rec


# --------------------------------------------------------------------------- comparison
def inputs(dataset: str, n: int, data_dir, seed: int):
    import torch

    if dataset == "mnist" and data_dir:
        from jfb.data import DatasetNotFoundError, get_spec, load_torchvision

        try:
            images, labels = load_torchvision(get_spec("mnist"), "train", data_dir)
        except DatasetNotFoundError:
            pass
        else:
            x = images[:n].to(torch.float32).div(255).sub(0.1307).div(0.3081)
            return x, labels[:n].clone(), f"MNIST training images 1-{len(x)} (Normalize(0.1307, 0.3081))"
    from jfb.models import MODELS

    shape = MODELS[dataset].in_shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y, f"random N(0,1) {n}x{'x'.join(map(str, shape))} and random labels, seed {seed}"


def diff(a, b) -> dict:
    """max |a - b|, and that relative to max |a| (a: theirs)."""
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    m = float((a - b).abs().max()) if a.numel() else 0.0
    scale = float(a.abs().max()) if a.numel() else 0.0
    return {"max_abs": m, "max_abs_theirs": scale, "rel": m / scale if scale > 0 else (0.0 if m == 0 else math.inf)}


def _float(v):
    return None if v is None else float(v)


def compare_dataset(dataset: str, mods, a, dtype, save_dir: Path, notes: list) -> dict:
    import torch

    from jfb import paper
    from jfb.models import build_model
    from jfb.models.authors import paper_module_map, paper_to_ours

    gamma = paper.value(dataset, "gamma")  # the authors' (the preset's svhn ift deviation is ours)
    contraction = paper.value(dataset, "contraction")
    options = paper.fixed_point_options(dataset, "ift")
    eps, max_depth = float(options["tol"]), int(options["max_iter"])
    float_dtype = torch.get_default_dtype()

    torch.manual_seed(a.seed)
    theirs = their_net(mods.networks, dataset, gamma)
    dropped = zero_dropout(theirs)
    theirs.to(dtype).train()
    x, y, described = inputs(dataset, a.batch, a.data_dir, a.seed)
    x = x.to(dtype)

    # Their compute_fixed_point rescales the latent convolutions at u = 0 before its loop: done here once,
    # by their code, on the weights both sides share.
    torch.set_default_dtype(dtype)
    try:
        latent = [p for n, p in theirs.named_parameters() if n.startswith("latent_convs.")]
        before = [p.detach().clone() for p in latent]
        with torch.no_grad():
            Qd = theirs.data_space_forward(x)
            torch.manual_seed(a.seed)
            theirs.normalize_lip_const(torch.zeros(Qd.shape, device=Qd.device), Qd)
        ratios = [float((p.detach() / b)[b != 0].mean()) for p, b in zip(latent, before)]
        factor = ratios[0] if ratios else 1.0
        theirs.normalize_lip_const = lambda u, v: None  # applied above; off for the step
    finally:
        torch.set_default_dtype(float_dtype)

    ours = build_model(dataset, latent_bn=False, contraction=contraction, gamma=gamma, fixed_point_options=options)
    ours.to(dtype)  # before loading: load_state_dict copies into the existing tensors, in their dtype
    ours.load_state_dict(paper_to_ours(dataset, theirs.state_dict(), latent_bn=False), strict=True)
    dropped_ours = zero_dropout(ours)

    torch.set_default_dtype(dtype)
    try:
        t = their_step(mods, theirs, x, y, dataset, eps, max_depth, a.history_iters, save_dir)
    finally:
        torch.set_default_dtype(float_dtype)
    o = our_step(ours, x, y)
    st = o["stats"]

    u_t, depth = t["fixed_point"]
    cg_t = t["cg"]
    x_t = cg_t["x"].squeeze(2).view(u_t.shape)
    # parameter gradients, their names -> ours
    mapping = paper_module_map(dataset)
    their_grads = t.get("grads", {})
    scale = max((float(g.abs().max()) for g in their_grads.values() if g is not None and g.numel()), default=0.0)
    zero_below = a.rtol * 1e-3 * scale  # a gradient this small in both codes is zero up to rounding
    grads, worst = {}, {"rel": 0.0, "name": None}
    for name, g_t in their_grads.items():
        module, _, leaf = name.rpartition(".")
        our_name = f"{mapping.get(module, module)}.{leaf}"
        g_o = o["grads"].get(our_name)
        if g_t is None or g_o is None:
            grads[name] = {"ours": our_name, "theirs_none": g_t is None, "ours_none": g_o is None,
                           "rel": 0.0 if (g_t is None) == (g_o is None) else math.inf}
        else:
            grads[name] = {"ours": our_name, **diff(g_t, g_o)}
            grads[name]["rel_to_update"] = grads[name]["max_abs"] / scale if scale > 0 else 0.0
            if max(grads[name]["max_abs_theirs"], float(g_o.abs().max())) <= zero_below:
                # e.g. a bias in front of a training-mode batch norm: mathematically zero, rounding on both
                # sides; judged against the whole update instead
                grads[name]["zero_in_both"] = True
                grads[name]["rel"] = grads[name]["rel_to_update"]
        if grads[name]["rel"] > worst["rel"] or worst["name"] is None:
            worst = {"rel": grads[name]["rel"], "name": name, "max_abs": grads[name].get("max_abs")}
    updated = "grads" in t
    niter, optimal = int(cg_t["info"]["niter"]), bool(cg_t["info"]["optimal"])
    row = {
        "dataset": dataset,
        "inputs": described,
        "batch": len(x),
        "their_class": type(theirs).__name__ + "(architecture='Jacobian')",
        "gamma": gamma,
        "tol": eps,
        "max_iter": max_depth,
        "our_options": {k: v for k, v in options.items()},
        "our_contraction": contraction,
        "dropout_modules_zeroed": {"theirs": dropped, "ours": dropped_ours},
        "lipschitz_rescale": {"applied_once_by_their_code": True, "factor": factor,
                              "rescaled": not math.isclose(factor, 1.0, rel_tol=0, abs_tol=1e-12)},
        "forward": {"theirs": float(depth), "ours": st.fwd_iters, "ours_residual": st.fwd_residual,
                    "ours_converged": st.fwd_converged, "fixed_point": diff(u_t, o["z_star"])},
        "cg": {"theirs": niter, "ours": st.bwd_iters, "theirs_optimal": optimal, "ours_converged": st.bwd_converged,
               "ours_residual": _float(st.bwd_residual), "b_norm_max": cg_t["b_norm_max"],
               "solution": diff(x_t, o["cg"]["w"]),
               "their_A_bmm_calls": cg_t["A_bmm_calls"], "their_logged_n_Umatvecs": niter * len(x),
               "their_J_products": 2 + 2 * cg_t["A_bmm_calls"], "our_J_products": st.bwd_matvecs,
               "their_kwargs": cg_t["kwargs"], "our_options": o["cg"]["options"],
               "history_max_residual": cg_t.get("history")},
        "update": {"theirs_applied": updated, "ours_applied_by_default": True, "largest_gradient_entry": scale,
                   "zero_in_both": [n for n, v in grads.items() if v.get("zero_in_both")],
                   "worst_parameter": worst, "parameters": grads},
        "their_log_line": t["logged"],
        "seconds": {"theirs_epoch": t["seconds"], "theirs_cg": cg_t["seconds"], "ours_step": o["seconds"]},
    }
    differences = []
    if float(depth) != st.fwd_iters:
        differences.append(f"forward iterations {depth:g} vs {st.fwd_iters}")
    if niter != st.bwd_iters:
        differences.append(f"CG iterations {niter} vs {st.bwd_iters}")
    if optimal != bool(st.bwd_converged):
        differences.append(f"CG converged {optimal} vs {st.bwd_converged}")
    if not row["forward"]["fixed_point"]["rel"] <= a.rtol:
        differences.append(f"fixed point rel diff {row['forward']['fixed_point']['rel']:.2e}")
    if not row["cg"]["solution"]["rel"] <= a.rtol:
        differences.append(f"CG solution rel diff {row['cg']['solution']['rel']:.2e}")
    if updated and not worst["rel"] <= a.rtol:
        differences.append(f"gradient rel diff {worst['rel']:.2e} ({worst['name']})")
    if not updated:
        differences.append("their loop skipped the update (CG did not converge); ours applies it by default "
                           "(trainer.skip_unconverged_backward=true skips it as theirs)")
    row["differences"] = differences
    row["equal"] = not differences
    return row


def implied_per_batch() -> dict:
    """What Table 2's mat-vec counts imply per batch under their counting (n_Umatvecs += niter * batch)."""
    out = {}
    from jfb import paper

    for ds, count in TABLE2_MATVECS.items():
        n, epochs = TRAIN_SIZE[ds], DRIVER_EPOCHS[ds]
        cap = int(paper.value(ds, "max_iter", "ift"))
        whole_run = count / (n * epochs)  # niter per batch, averaged over the run (batch-size weighted)
        per_epoch = count / n
        out[ds] = {"table2_matvecs": count, "train_size": n, "driver_epochs": epochs, "cg_cap": cap,
                   "niter_per_batch_if_whole_run": whole_run,
                   "niter_per_batch_if_per_epoch": per_epoch, "per_epoch_reading_possible": per_epoch <= cap,
                   "min_epochs_for_cap": count / (n * cap),
                   "A_bmm_calls_per_batch_if_whole_run": 3 * whole_run + 1}
    return out


# --------------------------------------------------------------------------- report
def _e(v, f="{:.2e}"):
    return "-" if v is None else f.format(v)


def write_md(path: Path, res: dict) -> None:
    L = ["# The paper preset's Jacobian-based step against the authors' code", ""]
    L += [f"Command: `{res['command']}`", "",
          f"Their code: {res['their_code']}. Hardware: {res['hardware']}. Versions: {res['versions']}. "
          f"Precision: {res['dtype']}. Date: {res['date']}.", ""]
    L += ["Each row: one batch, one set of weights shared by both codes (their class initialised with the seed, "
          "copied into ours), their `train_Jacobian_based_net` for one epoch over that batch against one training "
          "step of ours (`build_model(..., latent_bn=False, fixed_point_options=jfb.paper.fixed_point_options(ds, "
          "\"ift\"))`, forward and `loss.backward()`), with the authors' gamma and contraction control (the preset's "
          "SVHN `method=ift` deviation, gamma 0.45 with spectral norm, is ours and not used here; our Lipschitz "
          "control acts after the optimizer step only, so it does not enter one step). Dropout rates set to 0 in "
          "both (the identity, as in eval mode); batch norm in Q in training mode in both. Their Lipschitz rescale "
          "(`normalize_lip_const` at u = 0, which their `compute_fixed_point` "
          "runs first) applied once by their code to the shared weights, then off for the step in both. "
          "Relative differences are max |theirs - ours| / max |theirs|.", ""]
    L += ["| dataset | inputs | tol / cap | forward iters theirs / ours | fixed point rel diff | "
          "CG iters theirs / ours | CG converged theirs / ours | CG solution rel diff | update applied theirs | "
          "worst gradient rel diff (parameter) | equal |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["datasets"]:
        f, c, u = r["forward"], r["cg"], r["update"]
        w = u["worst_parameter"]
        L.append(f"| {r['dataset']} | {r['inputs']} | {r['tol']:g} / {r['max_iter']} | {f['theirs']:g} / "
                 f"{f['ours']} | {_e(f['fixed_point']['rel'])} | {c['theirs']} / {c['ours']} | "
                 f"{c['theirs_optimal']} / {c['ours_converged']} | {_e(c['solution']['rel'])} | "
                 f"{u['theirs_applied']} | {_e(w['rel']) if u['theirs_applied'] else '-'} "
                 f"({w['name'] if u['theirs_applied'] else 'no update'}) | {'yes' if r['equal'] else 'NO'} |")
    L += [""]
    for r in res["datasets"]:
        f, c = r["forward"], r["cg"]
        lip = r["lipschitz_rescale"]
        L += [f"**{r['dataset']}** ({r['their_class']}, gamma {r['gamma']:g}; batch {r['batch']}): "
              f"Lipschitz rescale factor {lip['factor']:.4g} "
              f"({'applied' if lip['rescaled'] else 'no rescale needed'}); "
              f"our forward residual {_e(f['ours_residual'])} (converged {f['ours_converged']}); "
              f"largest per-sample norm of the CG right-hand side {_e(c['b_norm_max'])}; "
              f"our final CG residual {_e(c['ours_residual'])}; their `cg_batch` called the J J^T mat-vec "
              f"{c['their_A_bmm_calls']} times (their log counts {c['their_logged_n_Umatvecs']} = niter x batch; "
              f"batched products with J or J^T, one VJP or double-backward pass each, right-hand side included: "
              f"theirs {c['their_J_products']}, ours {c['our_J_products']}); time: their epoch "
              f"{r['seconds']['theirs_epoch']:.1f} s (CG {r['seconds']['theirs_cg']:.1f} s), our step "
              f"{r['seconds']['ours_step']:.1f} s."
              + ("" if f["ours_converged"] else
                 f" The forward solve reached its cap of {r['max_iter']} without meeting the tolerance in both codes"
                 + (" (with gamma 0.9 and no latent batch norm the authors' SVHN iteration diverges from "
                    "initialisation, the authors' code; the preset's `method=ift` uses gamma 0.45 with "
                    "spectral norm instead, which their class cannot express)" if r["dataset"] == "svhn" else "")
                 + "; both then run CG at the same last iterate.")
              + (f" Differences: {'; '.join(r['differences'])}." if r["differences"] else ""), ""]
        if c.get("history_max_residual"):
            h = c["history_max_residual"]
            L += [f"Their `cg_batch`, run again on the same system with an unreachable tolerance (verbose), largest "
                  f"per-sample residual after each iteration: "
                  + ", ".join(f"{k + 1}: {v:.2e}" for k, v in enumerate(h)), ""]
    for n in res["notes"]:
        L.append(f"Note: {n}")
    if res.get("answer"):
        L += ["", res["answer"]]
    path.write_text("\n".join(L) + "\n")


def answer_text(res: dict) -> str:
    """The answer to: CIFAR-10 at 1e-4 reports 1.0 CG iteration per batch, the paper's 9.7e8 mat-vecs imply many
    more: whose count is right? Filled from the measurements of this run."""
    rows = {r["dataset"]: r for r in res["datasets"]}
    imp = res["table2_implied"]
    L = ["## CIFAR-10 at 1e-4: 1.0 CG iteration per batch, or many more?", ""]
    L += ["What Table 2's mat-vec counts imply, with their counting (`n_Umatvecs += niter x batch_size` per batch, "
          "so the count divided by the training-set size is the batch-weighted sum of `niter` over batches):", "",
          "| dataset | Table 2 mat-vecs | train size | driver epochs | CG cap | niter per batch if the count is the "
          "whole run | if it is per epoch | fewest epochs the cap allows | J J^T mat-vecs their `cg_batch` computes "
          "per batch, whole-run reading (3 niter + 1) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for ds, v in imp.items():
        L.append(f"| {ds} | {v['table2_matvecs']:.1e} | {v['train_size']} | {v['driver_epochs']} | {v['cg_cap']} | "
                 f"{v['niter_per_batch_if_whole_run']:.2f} | {v['niter_per_batch_if_per_epoch']:.0f}"
                 f"{'' if v['per_epoch_reading_possible'] else ' (above the cap: impossible)'} | "
                 f"{v['min_epochs_for_cap']:.1f} | {v['A_bmm_calls_per_batch_if_whole_run']:.1f} |")
    L.append("")
    c = rows.get("cifar10")
    if c is None:
        L.append("CIFAR-10 was not measured in this run.")
        return "\n".join(L)
    cg, v = c["cg"], imp["cifar10"]
    agree = cg["theirs"] == cg["ours"] and c["equal"]
    L += [f"Measured here (CIFAR-10 network at random initialisation, {c['inputs']}, batch {c['batch']}, tolerance "
          f"{c['tol']:g} on each sample's Euclidean normal-equation residual, cap {c['max_iter']}, {res['dtype']}): "
          f"their `cg_batch` stops after **{cg['theirs']}** iteration(s) (optimal {cg['theirs_optimal']}), ours after "
          f"**{cg['ours']}** (converged {cg['ours_converged']})"
          + ("; the two codes agree on this batch to rounding (iterates, solution and update)." if agree else
             "; the two codes do NOT agree on this batch (see the differences above).")
          + f" Their `cg_batch` evaluated the J J^T mat-vec {cg['their_A_bmm_calls']} times for it (3 per iteration "
          f"plus 1), while their log adds {cg['their_logged_n_Umatvecs']} = niter x batch.", ""]
    h = cg.get("history_max_residual")
    if h:
        def first_below(t):
            return next((k + 1 for k, r in enumerate(h) if r <= t), None)

        tol = c["tol"]
        per = [(t, first_below(t)) for t in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)]
        target = v["niter_per_batch_if_whole_run"]
        k_target = int(math.ceil(target))
        L += [f"How the count depends on the batch: their `cg_batch`, run again on the same system with an unreachable "
              f"tolerance gives the largest per-sample residual after each iteration (1: {h[0]:.2e}, 2: "
              f"{h[1] if len(h) > 1 else float('nan'):.2e}, ..., {len(h)}: {h[-1]:.2e}; listed above), so the "
              f"iterations this batch needs at each tolerance are: "
              + ", ".join(f"{t:g}: {k if k is not None else f'more than {len(h)}'}" for t, k in per) + ". "
              f"CG is linear in the right-hand side, so scaling dl/du by c is the same as dividing the tolerance "
              f"by c. "
              f"One iteration at {tol:g} therefore needs a right-hand side at most {tol / h[0]:.2g}x this batch's "
              f"(largest per-sample norm of b = J w here: {cg['b_norm_max']:.2e}; the loss is a batch mean, so w "
              f"carries 1/batch and shrinks with the per-sample loss gradients as the network fits its data)"
              + (f"; {target:.1f} iterations (Table 2, whole-run reading) need it about "
                 f"{tol / h[k_target - 1]:.0f}x larger, or a worse-conditioned J J^T" if k_target <= len(h) else "")
              + ".", ""]
    L += [f"Whose count is right: both. The two codes count the same thing (iterations of the same per-sample CG "
          f"with the same stopping rule: our `bwd_iters`, their `info['niter']`) and, for the same weights and batch, "
          f"get the same number; a count of ours under the preset is what their loop would log for that batch. "
          f"The per-batch number is a property of the batch and the weights, not of the code: at random "
          f"initialisation on these inputs it is {cg['theirs']}, and a mean of 1.0 means batches whose right-hand "
          f"sides were small enough for one iteration (by the scaling above, at most about {tol / h[0]:.2g}x this "
          f"one's)." if h else
          f"Whose count is right: both codes count the same thing and, for the same weights and batch, get the same "
          f"number ({cg['theirs']} here)."]
    L += ["", f"Table 2's 9.7e8 cannot be a per-epoch count (that would be {v['niter_per_batch_if_per_epoch']:.0f} "
          f"iterations per batch against a cap of {v['cg_cap']}). As a total over the driver's {v['driver_epochs']} "
          f"epochs it is {v['niter_per_batch_if_whole_run']:.1f} iterations per batch on average (more if the run was "
          f"shorter; it needs at least {v['min_epochs_for_cap']:.0f} epochs to fit under the cap), i.e. about "
          f"{v['A_bmm_calls_per_batch_if_whole_run']:.0f} J J^T mat-vecs actually computed per batch, since their "
          f"counter under-counts by about 3x. Those were batches of real, augmented CIFAR-10 seen by a network in "
          f"training, whose weights (and so the conditioning of J J^T and the size of dl/du) change over 1000 epochs. "
          f"This measurement is of a random-initialisation network only; a trained network may need more iterations "
          f"(or fewer), and nothing here measures that."]
    return "\n".join(L)


def compare(a) -> dict:
    import torch

    from jfb.evaluate import hardware, versions

    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = {"float64": torch.float64, "float32": torch.float32}[a.dtype]
    notes: list = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="authors_code_") as tmp:
        tmp = Path(tmp)
        (tmp / "code").mkdir()
        (tmp / "save").mkdir()
        source = materialise(a, tmp / "code")
        shims(notes)
        with authors_modules(tmp / "code") as mods:
            rows = [compare_one(ds, mods, a, dtype, tmp / "save", notes) for ds in a.datasets]
    for n in notes:
        print(f"note: {n}")
    res = {"their_code": source, "dtype": a.dtype, "rtol": a.rtol, "seed": a.seed, "notes": notes,
           "hardware": hardware(torch.device("cpu")), "versions": versions(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "command": "python scripts/compare_authors_cg.py " + shlex.join(sys.argv[1:] if a.argv is None else a.argv),
           "datasets": rows, "table2_implied": implied_per_batch()}
    res["answer"] = answer_text(res)
    return res


def compare_one(ds, mods, a, dtype, save_dir, notes) -> dict:
    row = compare_dataset(ds, mods, a, dtype, save_dir, notes)
    print(f"{ds:8s} forward {row['forward']['theirs']:g}/{row['forward']['ours']}  CG "
          f"{row['cg']['theirs']}/{row['cg']['ours']}  optimal {row['cg']['theirs_optimal']}/"
          f"{row['cg']['ours_converged']}  x rel {row['cg']['solution']['rel']:.2e}  grad rel "
          f"{row['update']['worst_parameter']['rel']:.2e}  "
          f"{'EQUAL' if row['equal'] else 'DIFFERENT: ' + '; '.join(row['differences'])}", flush=True)
    return row


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    return o


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--authors-git-dir", help="git directory of their repository (bare is fine)")
    src.add_argument("--authors-dir", help="a folder holding their Networks.py, utils.py and BatchCG.py")
    p.add_argument("--commit", default="HEAD", help="with --authors-git-dir: the commit to read (default HEAD)")
    p.add_argument("--data-dir", help="data root with MNIST (a real MNIST batch; else random inputs)")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated (default mnist,svhn,cifar10)")
    p.add_argument("--batch", type=int, default=100, help="batch size (default 100, the authors')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--rtol", type=float, help="largest relative difference counted as equal "
                   "(default 1e-6 in float64, 1e-3 in float32)")
    p.add_argument("--history-iters", type=int, default=0,
                   help="also run their cg_batch this many iterations on each batch's system with an unreachable "
                        "tolerance and record the residual per iteration (default 0: off)")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--out", help="write OUT.json and OUT.md (e.g. results/bench/authors-cg-comparison)")
    p.add_argument("--render", metavar="JSON", help="only re-write the Markdown (and the answer in the JSON) of "
                   "a previous run's OUT.json, measuring nothing")
    a = p.parse_args(argv)
    a.argv = argv
    if a.render:
        res = json.loads(Path(a.render).read_text())
        res["answer"] = answer_text(res)
        Path(a.render).write_text(json.dumps(res, indent=1) + "\n")
        write_md(Path(a.render).with_suffix(".md"), res)
        print(f"wrote {Path(a.render).with_suffix('.md')}")
        return 0 if all(r["equal"] for r in res["datasets"]) else 1
    a.datasets = [s.strip() for s in a.datasets.split(",") if s.strip()]
    bad = [s for s in a.datasets if s not in DATASETS]
    if bad or not a.datasets:
        p.error(f"--datasets: {bad or 'none given'}; choose from {', '.join(DATASETS)}")
    if not (a.authors_git_dir or a.authors_dir):
        p.error("one of --authors-git-dir, --authors-dir (or --render) is required")
    if a.batch < 2:
        p.error(f"--batch={a.batch} must be >= 2")
    if a.rtol is None:
        a.rtol = 1e-6 if a.dtype == "float64" else 1e-3
    res = compare(a)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(_jsonable(res), indent=1) + "\n")
        write_md(out.with_suffix(".md"), res)
        print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    if not all(r["equal"] for r in res["datasets"]):
        print("error: the two codes differ on " + ", ".join(r["dataset"] for r in res["datasets"] if not r["equal"]),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
