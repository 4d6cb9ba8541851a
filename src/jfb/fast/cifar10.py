"""CIFAR-10 fast preset (``experiment=fast/cifar10``): the paper preset (src/jfb/paper/cifar10.py) with the
forward solver and the Lipschitz probe's schedule chosen by the solver study (``python -m
jfb.bench.solver_study``, results/bench/solver-study-cpu.md) on synthetic data with CIFAR-10's shapes:
iteration counts to the paper's tolerance and step times only. Its accuracy on real CIFAR-10 is not
measured here. On a CPU the 32-block data network Q dominates the step, so the solve and the probe move
a CIFAR-10 step by a few per cent only.

``CHECK_EVERY`` (see src/jfb/fast/mnist.py): 1 on a CPU, 2 on a GPU (unmeasured here).
"""
NAME = "cifar10"

SETTINGS = dict(
    solver="anderson",        # the paper: plain fixed-point iteration (picard)
    m=2,
    lam=1.0e-4,
    beta=1.0,
    contraction_every=10,     # the paper: every step
)
SOLVER_OPTIONS = {k: SETTINGS[k] for k in ("m", "lam", "beta")}
CHECK_EVERY = {"cpu": 1, "cuda": 2}

DEVIATIONS = (
    "Forward solver: Anderson acceleration (type II, memory 2, mixing 1, regularisation 1e-4 relative to the "
    "newest residual) instead of the paper's plain fixed-point iteration, with the paper's stopping rule and "
    "tolerance (largest per-pixel channel norm of R(u) - u at most 0.1, at most 50 applications of R). "
    "Chosen on synthetic data with CIFAR-10's shapes; not validated for accuracy on real CIFAR-10.",
    "Lipschitz probe after every 10th training step instead of every step.",
)
