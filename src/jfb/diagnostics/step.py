"""One call per training step: how the method's gradient compares with the exact one, and
whether the contraction the theory assumes holds at this batch's fixed point."""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, Optional, Union

import torch
from torch import nn

from .checks import check_int, check_positive
from .compare import compare_gradients, parameter_groups
from .exact import EXACT_BACKWARDS, STOPS, exact_gradient, worst_of
from .operator_norm import NORM_METHODS, jacobian_norm
from .state import ModelState, RNGState, load_buffers


def _number(x):
    """JSON-safe: bools and ints as they are, finite floats as floats, anything else None."""
    if x is None or isinstance(x, (bool, int)):
        return x
    x = float(x)
    return x if math.isfinite(x) else None


def _sync(model: nn.Module) -> None:
    p = next(model.parameters(), None)
    if p is not None and p.device.type == "cuda":
        torch.cuda.synchronize(p.device)


def diagnose_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    rng_state: Union[RNGState, torch.Tensor, None],
    tol: float = 1e-6,
    max_iter: int = 200,
    power_iters: int = 50,
    power_tol: float = 1e-4,
    *,
    backward: str = "cg",
    stop: str = "rel",
    jac_method: str = "lanczos",
    require_converged: bool = True,
    per_sample: bool = False,
    start_buffers: Optional[Dict[str, torch.Tensor]] = None,
) -> dict:
    """Compare the gradient in ``p.grad`` with the exact gradient of the same batch and loss, and
    measure ``||dT/du||_2`` at the fixed point; leave everything as found.

    Call it after ``loss.backward()`` and before ``optimizer.step()``, with ``rng_state`` taken
    (:func:`jfb.diagnostics.rng_state`) right before that step's forward. The forward
    ``loss_fn(model(x)[0] if it returns a tuple else model(x), y)`` runs once more from that RNG
    state (same dropout masks, same batch statistics), every :func:`jfb.fixed_point` call in it
    differentiated exactly (:func:`jfb.diagnostics.exact_gradient` with ``tol``, ``max_iter``,
    ``backward``, ``stop``); the norm estimate (:func:`jfb.diagnostics.jacobian_norm` with
    ``jac_method``, at most ``power_iters`` steps of one JVP and one VJP, relative change
    ``power_tol``) runs on the Jacobian of that pass's output application at z*, the whole batch
    as one map. Afterwards every buffer, ``.grad``, module attribute and RNG stream is as it was;
    the optimizer is not touched.
    Buffers that the forward reads are those of after the step's forward unless ``start_buffers``
    (:func:`jfb.diagnostics.snapshot_buffers` taken with ``rng_state``) gives the ones it started
    from: pass them when the forward advances a buffer it reads. Spectral-norm contraction does
    (one power-iteration step per training forward): on the MNIST network with a tight IFT the
    cosine is 1 - 4e-4 without them and 1 - 5e-14 with them. Batch-norm running statistics are
    not read in training mode.

    Returns a flat dict of JSON-safe values (non-finite numbers become None):

    * ``cos_all``, ``cos_<child>`` per top-level child (Q, R, S), ``norm_ratio`` (|method|/|exact|),
      ``descent`` (cos_all > 0); None where undefined, and all None when the adjoint solve missed
      ``tol`` and ``require_converged`` is true (the reference would not be the exact gradient);
    * ``adjoint_iters``, ``adjoint_residual`` (the solver's stopping value), ``adjoint_true_residual``
      (of ``(I - A^T) w = g``), ``adjoint_converged``;
    * ``fwd_residual``, ``fwd_converged``: the forward solve of the pass (the model's own settings;
      eq. 14 is the gradient at a fixed point, so a solve far from one makes "exact" approximate);
    * ``jac_norm``, ``jac_norm_iters``, ``jac_norm_converged``, ``jac_norm_tol`` (the largest over
      the pass's fixed points, ``n_fixed_points`` of them); with ``per_sample=True`` also
      ``jac_norm_sample_max`` (``scope="sample"`` of :func:`jfb.diagnostics.jacobian_norm`: each
      sample's own norm only when samples are independent) with its iterations and convergence;
    * ``time_s``: wall time of this call.
    """
    check_positive("tol", tol)
    check_int("max_iter", max_iter, 1)
    check_int("power_iters", power_iters, 1)
    check_positive("power_tol", power_tol)
    if backward not in EXACT_BACKWARDS:
        raise ValueError(f"backward={backward!r} is not one of {EXACT_BACKWARDS}")
    if stop not in STOPS:
        raise ValueError(f"stop={stop!r} is not one of {STOPS}")
    if jac_method not in NORM_METHODS:
        raise ValueError(f"jac_method={jac_method!r} is not one of {NORM_METHODS}")
    _sync(model)
    t0 = time.perf_counter()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    method_grads = {n: p.grad for n, p in named}
    if all(g is None for g in method_grads.values()):
        raise ValueError("no parameter has a .grad: call diagnose_step after loss.backward() and before zero_grad()")
    saved = ModelState(model)
    try:
        if start_buffers is not None:
            load_buffers(model, start_buffers)

        def closure():
            out = model(x)
            return loss_fn(out[0] if isinstance(out, (tuple, list)) else out, y)

        exact = exact_gradient(closure, named, tol, max_iter, rng_state=rng_state, backward=backward, stop=stop,
                               keep_graph=True)
        norms = [jacobian_norm(s.products, power_iters, power_tol, method=jac_method) for s in exact.solves]
        sample_norms = []
        if per_sample:
            sample_norms = [jacobian_norm(s.products, power_iters, power_tol, scope="sample", method="power")
                            for s in exact.solves]
        exact.release()
    finally:
        saved.restore()
    if not norms:  # no adjoint solve ran: the loss reached no fixed point through a graph
        raise ValueError("the loss does not depend on any jfb.fixed_point output through autograd; nothing to diagnose")
    cmp = compare_gradients(method_grads, exact.as_dict(), parameter_groups(model))
    if require_converged and not exact.adjoint_converged:
        cmp = {k: None for k in cmp}
    worst = max(norms, key=lambda r: r.value)
    out = {
        **cmp,
        "adjoint_iters": exact.adjoint_iters,
        "adjoint_residual": exact.adjoint_residual,
        "adjoint_true_residual": exact.adjoint_true_residual,
        "adjoint_converged": exact.adjoint_converged,
        "jac_norm": worst.value,
        "jac_norm_iters": max(r.iters for r in norms),
        "jac_norm_converged": all(r.converged for r in norms),
        "jac_norm_tol": float(power_tol),
        "n_fixed_points": len(exact.records),
        "fwd_residual": worst_of(r.stats.fwd_residual for r in exact.records),
        "fwd_converged": all(r.stats.fwd_converged for r in exact.records),
    }
    if per_sample:
        out["jac_norm_sample_max"] = max(r.value for r in sample_norms)
        out["jac_norm_sample_iters"] = max(r.iters for r in sample_norms)
        out["jac_norm_sample_converged"] = all(r.converged for r in sample_norms)
    _sync(model)
    out["time_s"] = time.perf_counter() - t0
    return {k: _number(v) for k, v in out.items()}
