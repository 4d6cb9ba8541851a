"""Cost benchmarks of the gradient methods: ``python -m jfb.bench`` (``make bench``) writes ``results/bench/``.

:mod:`~jfb.bench.depth` times every method's forward and backward and measures its memory at fixed depths;
:mod:`~jfb.bench.paper_step` whole MNIST training steps at the authors' settings, against the step's floor;
:mod:`~jfb.bench.adjoint_accuracy` the adjoint solvers at equal true residual (one epoch's time is what
``jfb-train`` records). As airbench: the device is synchronised before each clock read, warm-up is left
out, variants are interleaved so a noisy machine slows them alike, and every figure carries its spread.
"""
