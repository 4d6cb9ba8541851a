"""Gradient and contraction diagnostics for any model whose forward calls :func:`jfb.fixed_point`.

JFB's gradient is not the gradient of the loss; the paper's Theorem 0.2 says it is still a descent direction
when T is contractive in u. These tools measure both sides of that claim, intercepting the model's calls
(:func:`jfb.core.override_method`, :func:`jfb.core.capture_fixed_points`) so the model needs no change:
:func:`exact_gradient` (eq. 14 for the same batch and loss), :func:`compare_gradients` (cosines, norm ratio,
descent), :func:`jacobian_norm` (``||dT/du||_2`` at u*), and :func:`diagnose_step`, all of it between
``loss.backward()`` and ``optimizer.step()``, leaving the model and RNG streams as they were. Example::

    import torch
    import torch.nn.functional as F
    import jfb
    from jfb.diagnostics import diagnose_step, rng_state

    class DEQ(torch.nn.Module):
        def __init__(self, n=16, d=8):
            super().__init__()
            self.inp, self.W, self.out = torch.nn.Linear(d, n), torch.nn.Linear(n, n, bias=False), torch.nn.Linear(n, 3)
            with torch.no_grad():
                self.W.weight.mul_(0.5 / torch.linalg.matrix_norm(self.W.weight, 2))

        def forward(self, x):
            v = self.inp(x)
            z, stats = jfb.fixed_point(lambda z: torch.tanh(self.W(z) + v), torch.zeros_like(v), "jfb", tol=1e-6)
            return self.out(z)

    model, x, y = DEQ(), torch.randn(32, 8), torch.randint(0, 3, (32,))
    start = rng_state()                       # before the step's forward
    F.cross_entropy(model(x), y).backward()   # JFB's gradient, now in p.grad
    report = diagnose_step(model, x, y, F.cross_entropy, start, tol=1e-8, max_iter=100)
    print(report["cos_all"], report["cos_W"], report["norm_ratio"], report["jac_norm"], report["adjoint_converged"])

For the pieces alone, see docs/diagnostics.md.
"""
from .compare import compare_gradients, parameter_groups
from .exact import AdjointSolve, ExactGradient, ExactIFT, exact_gradient
from .operator_norm import OperatorNorm, jacobian_norm, products_at
from .state import ModelState, RNGState, load_buffers, rng_state, snapshot_buffers
from .step import diagnose_step

__all__ = [
    "diagnose_step", "exact_gradient", "ExactGradient", "ExactIFT", "AdjointSolve", "compare_gradients",
    "parameter_groups", "jacobian_norm", "OperatorNorm", "products_at", "rng_state", "RNGState",
    "snapshot_buffers", "load_buffers", "ModelState",
]
