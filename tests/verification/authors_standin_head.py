"""A stand-in for the authors' latest code (their ``Networks.py``, ``utils.py`` and ``BatchCG.py``), for
tests of verification/compare_cg.py: the interfaces that script uses (``MNIST_FPN`` with its
constructor, attribute and method names; ``utils.compute_fixed_point`` and
``utils.train_Jacobian_based_net`` with their signatures and epoch log line; ``BatchCG.cg_batch`` with
its signature, ``info`` dict and verbose line), written here from the description in
the authors' code, none of their code.

    from authors_standin_head import write_code
    write_code(folder)                   # folder/Networks.py, utils.py, BatchCG.py
    write_code(folder, cg_start="zero")  # a CG that starts at 0 instead of the right-hand side
"""
from __future__ import annotations

from pathlib import Path

NETWORKS = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


def _lrelu(x):
    return F.leaky_relu(x, 0.1)


class MNIST_FPN(nn.Module):
    def __init__(self, lat_layers=4, num_channels=32, contraction_factor=0.1, momentum=0.1, architecture="FPN"):
        super().__init__()
        c = num_channels
        self._lat_layers = lat_layers
        self.gamma = contraction_factor
        self.architecture = architecture
        self.depth = 0.0
        self.conv_d1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn_1 = nn.BatchNorm2d(16)
        self.conv_d2 = nn.Conv2d(16, c, 3, padding=1)
        self.bn_2 = nn.BatchNorm2d(c)
        # convolutions at 0 and 3, as the key names of the authors' files
        self.latent_convs = nn.ModuleList([
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.1), nn.Dropout2d(0.0),
                          nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.1), nn.Dropout2d(0.0))
            for _ in range(lat_layers)])
        self.lat_batch_norm = nn.ModuleList([nn.BatchNorm2d(c, momentum=momentum, affine=False)
                                             for _ in range(lat_layers)])
        self.conv_y = nn.Conv2d(c, 16, 3)
        self.drop_S = nn.Dropout2d(0.2)
        self.fc_y = nn.Linear(784, 10, bias=False)

    def name(self):
        return "MNIST_FPN_" + self.architecture

    def device(self):
        return self.conv_d1.weight.device

    def data_space_forward(self, d):
        x = F.max_pool2d(_lrelu(self.bn_1(self.conv_d1(d))), 3)
        return _lrelu(self.bn_2(self.conv_d2(x)))

    def latent_space_forward(self, u, v):
        x = u + v
        for i, block in enumerate(self.latent_convs):
            y = x + _lrelu(block(x))
            x = y if self.architecture == "Jacobian" else self.lat_batch_norm[i](y)
        return self.gamma * x

    def map_latent_to_inference(self, u):
        return self.fc_y(self.drop_S(_lrelu(self.conv_y(u))).flatten(1))

    def normalize_lip_const(self, u, v):
        n_u = torch.randn(u.shape)
        n_v = torch.randn(u.shape)
        v_noisy = v + n_v
        dR = self.latent_space_forward(u + n_u, v_noisy) - self.latent_space_forward(u, v_noisy)
        ratio_R = dR.norm(dim=1).mean()
        ratio_u = n_u.norm(dim=1).mean()
        if ratio_R > self.gamma * ratio_u:
            factor = (self.gamma * ratio_u / ratio_R) ** (1.0 / self._lat_layers)
            for block in self.latent_convs:
                for k in (0, 3):
                    block[k].weight.data *= factor
                    block[k].bias.data *= factor

    def forward(self, d, eps=1.0e-3, max_depth=100, depth_warning=False):
        with torch.no_grad():
            v = self.data_space_forward(d)
            u = torch.zeros(v.shape)
            self.depth = 0.0
            while self.depth < max_depth:
                new = self.latent_space_forward(u, v)
                self.depth += 1.0
                step = torch.max(torch.norm(new - u, dim=1))
                u = new
                if step <= eps:
                    break
            if self.training:
                self.normalize_lip_const(u, v)
        if self.training:
            return self.map_latent_to_inference(self.latent_space_forward(u, self.data_space_forward(d)))
        return self.map_latent_to_inference(u)
'''

BATCH_CG = '''
import torch


def cg_batch(A_bmm, B, M_bmm=None, X0=None, rtol=1e-3, atol=0.0, maxiter=None, verbose=False):
    """Plain CG for K independent systems A_k X_k = B_k (B: K x n x m), identity preconditioner."""
    K, n, m = B.shape
    if X0 is None:
        X0 = START
    if maxiter is None:
        maxiter = 5 * n
    stop = torch.clamp(rtol * B.norm(dim=1), min=atol)
    X = X0
    R = B - A_bmm(X)
    P = R
    rr = (R * R).sum(1)
    optimal, k = False, 0
    for k in range(1, maxiter + 1):
        AP = A_bmm(P)
        pAp = (P * AP).sum(1)
        alpha = rr / torch.where(pAp == 0, torch.full_like(pAp, 1e-8), pAp)
        X = X + alpha.unsqueeze(1) * P
        R = R - alpha.unsqueeze(1) * AP
        res = (B - A_bmm(X)).norm(dim=1)
        if verbose:
            print("%03d | %8.4e" % (k, float((res - stop).max())))
        if bool((res <= stop).all()):
            optimal = True
            break
        rr_new = (R * R).sum(1)
        P = R + (rr_new / torch.where(rr == 0, torch.full_like(rr, 1e-8), rr)).unsqueeze(1) * P
        rr = rr_new
    return X, {"niter": k, "optimal": optimal}
'''

UTILS = '''
import torch
from BatchCG import cg_batch


def get_stats(net, test_loader, criterion, num_classes, eps, max_depth):
    loss, correct = 0.0, 0
    with torch.no_grad():
        for d, labels in test_loader:
            y = net(d, eps=eps, max_depth=max_depth)
            loss += len(d) * criterion(y, labels).item()
            correct += (y.argmax(1) == labels).sum().item()
    return loss / len(test_loader.dataset), 100.0 * correct / len(test_loader.dataset), correct


def compute_fixed_point(T, Qd, max_depth, device, eps=1e-4):
    u = torch.zeros(Qd.shape)
    T.normalize_lip_const(u, Qd)
    depth = 0.0
    with torch.no_grad():
        while depth < max_depth:
            new = T.latent_space_forward(u, Qd)
            depth += 1.0
            done = torch.max(torch.norm(new - u, dim=1)) <= eps
            u = new
            if done:
                break
    return u.detach(), depth


def train_Jacobian_based_net(net, max_epochs, lr_scheduler, train_loader, test_loader, optimizer, criterion,
                             num_classes, eps, max_depth, save_dir="./", JTJ_shift=0.0):
    for epoch in range(max_epochs):
        n_matvecs, cg_iters, max_depth_seen = 0, 0, 0
        for d, labels in train_loader:
            with torch.no_grad():
                Qd = net.data_space_forward(d)
                u, depth = compute_fixed_point(net, Qd, max_depth, net.device(), eps=eps)
                max_depth_seen = max(depth, max_depth_seen)
            net.train()
            optimizer.zero_grad()
            u.requires_grad = True
            Qd = net.data_space_forward(d)
            Ru = net.latent_space_forward(u, Qd)
            loss = criterion(net.map_latent_to_inference(Ru), labels)
            w = torch.autograd.grad(loss, Ru, retain_graph=True, create_graph=True)[0]
            w_J = w - torch.autograd.grad(Ru, u, w, retain_graph=True, create_graph=True)[0]  # (I - A^T) w
            rhs = torch.autograd.grad(w_J, w, w, retain_graph=True, create_graph=True)[0]      # (I - A) w
            rhs = rhs.detach().view(len(d), -1).unsqueeze(2)

            def matvec(v):
                v = v.squeeze(2).view(Ru.shape)
                v.requires_grad = True
                v_J = v - torch.autograd.grad(Ru, u, v, retain_graph=True, create_graph=True)[0]
                out = torch.autograd.grad(v_J, v, v_J, retain_graph=True, create_graph=True)[0]
                return out.detach().view(len(d), -1).unsqueeze(2)

            x, info = cg_batch(matvec, rhs, M_bmm=None, X0=None, rtol=0, atol=eps, maxiter=max_depth,
                               verbose=False)
            n_matvecs += info["niter"] * len(d)
            cg_iters += info["niter"]
            if info["optimal"]:
                Ru.backward(x.squeeze(2).view(Ru.shape))
                criterion(net.map_latent_to_inference(Ru.detach()), labels).backward()
                optimizer.step()
        lr_scheduler.step()
        test_loss, test_acc, _ = get_stats(net, test_loader, criterion, num_classes, eps, max_depth)
        print("[%d/%d]: test acc = %5.2f%% | depth = %5.1f | n_Umatvecs = %4d | cg = %7.3e"
              % (epoch + 1, max_epochs, test_acc, max_depth_seen, n_matvecs, cg_iters))
    return net
'''

_STARTS = {"rhs": "B", "zero": "torch.zeros_like(B)"}


def write_code(folder, cg_start: str = "rhs") -> Path:
    """Networks.py, utils.py and BatchCG.py in ``folder``. ``cg_start="zero"`` makes cg_batch start from
    X0 = 0 instead of the right-hand side (a CG that differs from the authors')."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Networks.py").write_text(NETWORKS)
    (folder / "utils.py").write_text(UTILS)
    (folder / "BatchCG.py").write_text(BATCH_CG.replace("START", _STARTS[cg_start]))
    return folder
