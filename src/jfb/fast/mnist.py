"""MNIST fast preset (``experiment=fast/mnist``): the paper preset (src/jfb/paper/mnist.py) with the forward
solver and the Lipschitz probe's schedule chosen by the solver study (``python -m jfb.bench.solver_study``,
results/bench/solver-study-cpu.md: the candidate with the fewest solve seconds per epoch among those
converging wherever Picard does, on a Picard training trajectory on real MNIST; and whole training
steps). Accuracy against the paper preset over seeds, on a validation split: the same results file
(its accuracy part); the epoch against the authors' code: results/bench/authors-side-by-side-*-fast.md.

``CHECK_EVERY``: how often the host reads the solve's residual (the solver's ``check_every``; the
result is the same bit for bit, with up to k-1 extra applications of R past the first iterate that
met the tolerance). On a CPU a read costs nothing worth an extra application of R: 1. On a GPU each
read makes the host wait for the device once per iteration; 2 halves those waits for at most one
extra application (unmeasured here: ``python -m jfb.bench.solver_study --device cuda`` measures the
``-ce2`` and ``-ce4`` candidates beside the plain ones).
"""
NAME = "mnist"

SETTINGS = dict(
    solver="anderson",        # the paper: plain fixed-point iteration (picard)
    m=1,                      # Anderson memory: residual differences mixed
    lam=1.0e-4,               # regularisation, relative to the newest residual (the solver's default)
    beta=1.0,                 # mixing: the mixed values of R, undamped
    contraction_every=10,     # the Lipschitz probe after every 10th training step (the paper: every step)
)
SOLVER_OPTIONS = {k: SETTINGS[k] for k in ("m", "lam", "beta")}
CHECK_EVERY = {"cpu": 1, "cuda": 2}

# What differs from experiment=paper/mnist (for docs/deviations.md); everything else is the paper preset's.
DEVIATIONS = (
    "Forward solver: Anderson acceleration (type II, memory 1, mixing 1, regularisation 1e-4 relative to the "
    "newest residual; jfb.core.solvers.anderson) instead of the plain fixed-point iteration of the paper's "
    "Algorithm 1. The stopping rule and tolerance are the paper's (largest per-pixel channel norm of "
    "R(u) - u at most 0.1, at most 50 applications of R), so the solve ends at the same fixed-point "
    "tolerance, in fewer applications of R; JFB differentiates one application of R at the returned iterate.",
    "Lipschitz probe (the authors' normalize_lip_const) after every 10th training step instead of every "
    "step: a rescale of R's convolutions comes up to 9 steps later than in the authors' schedule.",
)
