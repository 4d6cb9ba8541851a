"""SVHN: the authors' drivers train_SVHN.py, train_SVHN_Explicit.py, train_SVHN_Jacobian_Based.py."""
NAME = "svhn"

SETTINGS = dict(
    gamma=0.9,
    contraction="lipschitz",
    tol=1.0e-4,
    max_iter=200,
    residual="pixel",
    stop="abs",
    lr=1.0e-4,
    weight_decay=2.0e-4,
    lr_step=200,
    lr_decay=1.0,
    epochs=100,
    batch_size=100,
    test_batch_size=400,
    augment=False,
    svhn_extra=False,          # the `train` split only
)

METHODS = dict(
    ift=dict(
        cg_scope="sample", cg_start="rhs", backward_residual="sample",  # their cg_batch, as for MNIST
        # Our deviation (docs/deviations.md): with gamma 0.9 and no latent batch norm the authors' network
        # diverges from initialisation (their released Jacobian-based file trained a network whose latent
        # convolutions were disconnected). Spectrally normalised latent convolutions and gamma 0.45
        # (Lipschitz bound in u about gamma * (1 + |W2| |W1|) = 0.9) make the solve converge from
        # initialisation. Restore theirs with model.contraction=lipschitz model.gamma=0.9.
        gamma=0.45,
        contraction="spectral",
    ),
)
