"""Cost benchmarks of the gradient methods: time (forward solve and backward apart) and memory.

``python -m jfb.bench`` (``make bench``) writes ``results/bench/<device>.md`` and ``.json``:

* :mod:`~jfb.bench.depth`: for each paper network and each method, one training step's forward and
  backward time and its memory (bytes saved for backward; peak allocated on a GPU) at fixed forward
  depths (tolerance 1e-30, so exactly ``depth`` iterations run);
* :mod:`~jfb.bench.paper_step`: the MNIST network at the authors' settings on real MNIST, whole
  training steps (JFB and the Jacobian-based CG step with the authors' rules), with the step's floor;
* :mod:`~jfb.bench.adjoint_accuracy`: the IFT adjoint solvers (CG, fixed point, Anderson) timed at equal true
  adjoint residual;
* :mod:`~jfb.bench.epoch` (``--epoch``): one full JFB epoch on real MNIST with evaluation;
* :mod:`~jfb.bench.solver_study` (``--solvers``, or ``python -m jfb.bench.solver_study``): which forward
  solver reaches each paper preset's tolerance fastest in JFB training (iterations, solve and step
  times, accuracy over seeds), into ``results/bench/solver-study-<device>.md``.

Measurement follows airbench's rules: the device is synchronised before each
clock read, warm-up is left out, variants are interleaved within each repeat so that a shared,
noisy machine slows them alike, and every figure carries its spread, the hardware and versions.
"""
