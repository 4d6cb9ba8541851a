"""MNIST: the authors' drivers train_MNIST.py, train_MNIST_Explicit.py, train_MNIST_Jacobian_Based.py
(all three share these settings)."""
NAME = "mnist"

SETTINGS = dict(
    gamma=0.5,                 # contraction factor built into R
    contraction="lipschitz",   # the authors' empirical rescaling (jfb/models/contraction.py)
    tol=0.1,                   # forward tolerance on the largest per-pixel channel norm of u^{k+1} - u^k
    max_iter=50,               # forward iteration cap (max_depth)
    residual="pixel",
    stop="abs",
    lr=2.0e-4,                 # Adam
    weight_decay=1.0e-6,
    lr_step=100,               # StepLR(step_size, gamma): constant here
    lr_decay=1.0,
    epochs=100,
    batch_size=100,
    test_batch_size=400,
    augment=False,
    svhn_extra=False,
)

# The Jacobian-based driver: per-sample CG on the normal equations from the right-hand side, stopping
# when every sample's Euclidean residual norm is at most the forward tolerance, at most max_iter
# iterations (their BatchCG.cg_batch with X0 = rhs, atol = eps, maxiter = max_depth).
METHODS = dict(
    ift=dict(cg_scope="sample", cg_start="rhs", backward_residual="sample"),
)
