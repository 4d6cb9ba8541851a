"""A stand-in for the authors' b35a245 MNIST code, for tests: ``Networks.py`` and ``utils.py`` with
their interfaces (class and attribute names, constructor arguments, methods) written here from the
description in the authors' code, none of their code; and released-weight files
in their format.

    from authors_standin import write_code, write_weights
    write_code(folder)                      # folder/Networks.py, folder/utils.py
    files = write_weights(folder, weights)  # the three MNIST files, random weights
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

NETWORKS = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


def _lrelu(x):
    return F.leaky_relu(x, 0.1)


class _MNISTBase(nn.Module):
    latent_bn = True

    def __init__(self, res_layers=4, num_channels=32, contraction_factor=0.1, momentum=0.1):
        super().__init__()
        c = num_channels
        self.gamma = contraction_factor
        self.conv_d1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv_d2 = nn.Conv2d(16, c, 3, padding=1)
        # index 0 and 3 hold the convolutions, as in the released files' keys
        self.latent_convs = nn.ModuleList([
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.1), nn.Dropout2d(0.0),
                          nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.1), nn.Dropout2d(0.0))
            for _ in range(res_layers)])
        self.conv_y = nn.Conv2d(c, 16, 3)
        self.fc_y = nn.Linear(784, 10, bias=False)
        self.bn_1 = nn.BatchNorm2d(16)
        self.bn_2 = nn.BatchNorm2d(c)
        if self.latent_bn:
            self.lat_batch_norm = nn.ModuleList([nn.BatchNorm2d(c, momentum=momentum, affine=False)
                                                 for _ in range(res_layers)])
        self.drop_S = nn.Dropout2d(0.2)

    def name(self):
        return type(self).__name__

    def device(self):
        return self.conv_d1.weight.device

    def data_space_forward(self, d):
        return _lrelu(self.bn_2(self.conv_d2(F.max_pool2d(_lrelu(self.bn_1(self.conv_d1(d))), 3))))

    def latent_space_forward(self, u, v):
        x = u + v
        for i, block in enumerate(self.latent_convs):
            x = self.lat_batch_norm[i](x + _lrelu(block(x)))
        return self.gamma * x

    def map_latent_to_inference(self, u):
        return self.fc_y(self.drop_S(_lrelu(self.conv_y(u))).flatten(1))

    def normalize_lip_const(self, u, v):
        pass

    def forward(self, d, eps=1.0e-3, max_depth=100, depth_warning=False):
        with torch.no_grad():
            v = self.data_space_forward(d)
            u = torch.zeros_like(v)
            self.depth = 0.0
            while self.depth < max_depth:
                new = self.latent_space_forward(u, v)
                self.depth += 1.0
                step = torch.max(torch.norm(new - u, dim=1))
                u = new
                if step <= eps:
                    break
        return self.map_latent_to_inference(u)


class MNIST_FPN(_MNISTBase):
    pass


class MNIST_FPN_Explicit(_MNISTBase):
    def forward(self, d, eps=1.0e-3, max_depth=100, depth_warning=False):
        v = self.data_space_forward(d)
        return self.map_latent_to_inference(self.latent_space_forward(torch.zeros_like(v), v))


class MNIST_FPN_Adjoint(_MNISTBase):
    latent_bn = False
    connected = CONNECTED

    def latent_space_forward(self, u, v):
        x = u + v
        for block in self.latent_convs:
            res = _lrelu(block(x))
            if self.connected:
                x = x + res
        return self.gamma * x
'''

UTILS = '''
import torch


def compute_fixed_point(T, Qd, max_depth, device, eps=1e-4):
    T.eval()
    u = torch.zeros_like(Qd)
    depth = 0.0
    with torch.no_grad():
        while depth < max_depth:
            new = T.latent_space_forward(u, Qd)
            depth += 1.0
            step = torch.max(torch.norm(new - u, dim=1))
            u = new
            if step <= eps:
                break
    T.train()
    return u, depth
'''

# file name, class, where the weights are kept (as in the release)
FILES = (("MNIST_FPN_weights_98.00.pth", "MNIST_FPN", "net_state_dict"),
         ("MNIST_FPN_Explicit_weights_97.00.pth", "MNIST_FPN_Explicit", "net_state_dict"),
         ("MNIST_FPN_Jacobian_Based_weights_90.00.pth", "MNIST_FPN_Adjoint", "T_state_dict"))


def write_code(folder, connected_adjoint: bool = False) -> Path:
    """Networks.py and utils.py in ``folder``. ``connected_adjoint=True`` makes MNIST_FPN_Adjoint add
    its latent residual, i.e. a network that differs from the one b35a245 shipped."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Networks.py").write_text(NETWORKS.replace("CONNECTED", str(bool(connected_adjoint))))
    (folder / "utils.py").write_text(UTILS)
    return folder


def import_code(folder, name: str = "standin_networks"):
    spec = importlib.util.spec_from_file_location(name, Path(folder) / "Networks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def randomise(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and batch-norm statistics, large enough that R and eval mode matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(1.0 + torch.rand(t.shape, generator=g))
            elif t.is_floating_point():
                scale = 0.3 if "latent_convs" in name else 0.5
                t.copy_(scale * torch.randn(t.shape, generator=g) / (t[0].numel() ** 0.5 if t.dim() > 1 else 1))
    return net


def save_release_file(path, net: torch.nn.Module, state_key: str, acc_hist) -> Path:
    """``net`` saved the way the authors' drivers did: the state dict, the histories, the optimizer
    state and the pickled StepLR (which drags in its Adam and a defaultdict)."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # fills Adam's per-parameter state, as a trained file has
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100, gamma=1.0)
    torch.save({"test_loss_hist": [0.5 for _ in acc_hist], "test_acc_hist": list(acc_hist),
                state_key: net.state_dict(), "optimizer_state_dict": opt.state_dict(), "lr_scheduler": sched}, path)
    return Path(path)


def write_weights(code_folder, out_folder, seed: int = 0) -> dict:
    """The three MNIST release files from the stand-in classes (gamma 0.9, one latent block);
    returns {file name: the stand-in network holding the same weights}."""
    networks = import_code(code_folder, f"standin_networks_{seed}")
    out_folder = Path(out_folder)
    out_folder.mkdir(parents=True, exist_ok=True)
    nets = {}
    for k, (name, cls, key) in enumerate(FILES):
        net = randomise(getattr(networks, cls)(res_layers=1, num_channels=32, contraction_factor=0.9), seed + k)
        acc = float(name.split("_")[-1][:-4])
        save_release_file(out_folder / name, net, key, [acc - 1.0, acc])
        nets[name] = net
    return nets
