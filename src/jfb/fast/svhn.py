"""SVHN fast preset (``experiment=fast/svhn``): the paper preset (src/jfb/paper/svhn.py) with the forward
solver and the Lipschitz probe's schedule chosen by the solver study (``python -m jfb.bench.solver_study``,
results/bench/solver-study-cpu.md) on synthetic data with SVHN's shapes: iteration counts to the paper's
tolerance and step times only. Its accuracy on real SVHN is not measured here.

``CHECK_EVERY`` (see src/jfb/fast/mnist.py): 1 on a CPU; on a GPU 4, as SVHN's tolerance (1e-4 at
gamma 0.9) takes the longest solves, where skipping three host waits in four costs the fewest extra
applications of R relative to the solve (unmeasured here: ``--device cuda`` measures it).
"""
NAME = "svhn"

SETTINGS = dict(
    solver="anderson",        # the paper: plain fixed-point iteration (picard)
    m=2,
    lam=1.0e-4,
    beta=1.0,
    contraction_every=10,     # the paper: every step
)
SOLVER_OPTIONS = {k: SETTINGS[k] for k in ("m", "lam", "beta")}
CHECK_EVERY = {"cpu": 1, "cuda": 4}

DEVIATIONS = (
    "Forward solver: Anderson acceleration (type II, memory 2, mixing 1, regularisation 1e-4 relative to the "
    "newest residual) instead of the paper's plain fixed-point iteration, with the paper's stopping rule and "
    "tolerance (largest per-pixel channel norm of R(u) - u at most 1e-4, at most 200 applications of R). "
    "Chosen on synthetic data with SVHN's shapes; not validated for accuracy on real SVHN.",
    "Lipschitz probe after every 10th training step instead of every step.",
)
