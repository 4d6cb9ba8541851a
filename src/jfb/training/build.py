"""What a run trains, built from its resolved config: data loaders, model, optimizer, schedule.

Everything that can fail on bad input (missing data, a model that cannot be built) fails here,
before the run folder receives a single record.
"""
from __future__ import annotations

import torch

from .optimizers import make_optimizer, make_scheduler


def fixed_point_options(cfg: dict) -> dict:
    """The keyword arguments of :func:`jfb.fixed_point` from the method and solver configs."""
    sol = cfg["solver"]
    opts = {k: v for k, v in (cfg["method"].get("options") or {}).items() if v is not None}
    return dict(method=cfg["method"]["name"], tol=float(sol["tol"]), max_iter=int(sol["max_iter"]),
                solver=sol["name"], stop=sol["stop"], residual=sol["residual"],
                solver_options=dict(sol.get("options") or {}), **opts)


def build_data(cfg: dict, device: torch.device):
    """(train, test, val) loaders; val is None unless ``dataset.val_size`` > 0."""
    from ..data import build_loaders, split_validation

    d, t = cfg["dataset"], cfg["trainer"]
    train, test = build_loaders(
        d["name"], source=d["source"], data_dir=cfg["paths"]["data_dir"], batch_size=t["batch_size"],
        test_batch_size=t["test_batch_size"], augment=d.get("augment"), svhn_extra=d.get("svhn_extra", False),
        device=device, seed=cfg["seed"], synthetic_size=tuple(d.get("synthetic_size", (512, 256))),
        verify=d.get("verify", True))
    if d.get("val_size"):
        from .validate import ConfigError

        try:
            train, val = split_validation(train, int(d["val_size"]), t["test_batch_size"])
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return train, test, val
    return train, test, None


def build_network(cfg: dict, device: torch.device) -> torch.nn.Module:
    from ..models import build_model

    m = cfg["model"]
    return build_model(m["name"], implicit=m["implicit"], latent_bn=m["latent_bn"], contraction=m["contraction"],
                       gamma=m.get("gamma"), contraction_every=m.get("contraction_every", 1),
                       fixed_point_options=fixed_point_options(cfg) if m["implicit"] else None).to(device)


def build(cfg: dict, device: torch.device):
    """(train_loader, test_loader, val_loader or None, model, optimizer, scheduler) of a run."""
    train_loader, test_loader, val_loader = build_data(cfg, device)
    model = build_network(cfg, device)
    optimizer = make_optimizer(model.parameters(), cfg["optimizer"])
    scheduler = make_scheduler(optimizer, cfg["optimizer"])
    return train_loader, test_loader, val_loader, model, optimizer, scheduler
