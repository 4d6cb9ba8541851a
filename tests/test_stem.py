"""The fused first stage (jfb.models.stem) against the same modules run one by one, in float64, and
the process-wide host allocator setting (jfb.runtime)."""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from jfb.models import build_model
from jfb.models.stem import StemSequential, _applies

pytestmark = pytest.mark.usefixtures("one_thread")


def stage(c_in=1, c_out=6, k=3, pool=3, tail=False, seed=0, dtype=torch.float64, negative=True):
    torch.manual_seed(seed)
    mods = [nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1), nn.MaxPool2d(pool)]
    if tail:
        mods += [nn.Conv2d(c_out, 4, 3, padding=1), nn.LeakyReLU(0.1)]
    with torch.no_grad():
        w = torch.randn(c_out) + 0.5
        if negative:
            w[::2] = -w[::2].abs()  # decreasing batch norm on every other channel: the pool must take the min of z
        mods[1].weight.copy_(w)
        mods[1].bias.copy_(torch.randn(c_out))
        mods[1].running_mean.normal_()
        mods[1].running_var.uniform_(0.5, 2.0)
    plain = nn.Sequential(*mods).to(dtype)
    return plain, StemSequential(*copy.deepcopy(list(plain)))


def step(model, x, g):
    model.zero_grad(set_to_none=True)
    out = model(x)
    out.backward(g)
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("c_in,k,pool,tail", [(1, 3, 3, False), (1, 3, 3, True), (3, 3, 2, False), (2, 5, 4, False)])
def test_fused_stem_equals_the_modules_run_one_by_one(c_in, k, pool, tail):
    plain, fused = stage(c_in=c_in, k=k, pool=pool, tail=tail)
    x = torch.randn(5, c_in, 12, 13, dtype=torch.float64)
    shape = plain(x).shape
    g = torch.randn(shape, dtype=torch.float64)
    plain, fused = stage(c_in=c_in, k=k, pool=pool, tail=tail)  # fresh running statistics for both
    out_p, grad_p = step(plain, x, g)
    out_f, grad_f = step(fused, x, g)
    assert torch.allclose(out_f, out_p, rtol=0, atol=1e-12)
    for name in grad_p:
        scale = grad_p[name].abs().max().clamp_min(1.0)
        assert (grad_f[name] - grad_p[name]).abs().max() / scale < 1e-11, name
    assert grad_f["0.bias"].abs().max() == 0  # the batch norm cancels the conv bias exactly
    for (name, b_p), (_, b_f) in zip(plain.named_buffers(), fused.named_buffers()):
        assert torch.allclose(b_f.double(), b_p.double(), rtol=0, atol=1e-13), name


def test_fused_stem_is_used_in_training_with_grad_only():
    _, fused = stage()
    conv, bn, act, pool = fused
    x = torch.randn(3, 1, 9, 9, dtype=torch.float64)
    assert _applies(x, conv, bn, act, pool)
    assert not _applies(x.clone().requires_grad_(), conv, bn, act, pool)  # input gradients: run unfused
    assert not _applies(x.to("meta"), conv, bn, act, pool)  # measured on a CPU only: elsewhere unfused
    with torch.no_grad():
        assert not _applies(x, conv, bn, act, pool)
    fused.eval()
    assert not _applies(x, conv, bn, act, pool)
    # and those paths still compute the plain function
    plain, _ = stage()
    plain.eval()
    with torch.no_grad():
        assert torch.equal(fused(x), plain(x))


def test_fused_stem_falls_back_for_layers_it_does_not_cover():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 12, 12)
    for mods in ([nn.Conv2d(1, 4, 3, padding=1, stride=2), nn.BatchNorm2d(4), nn.LeakyReLU(0.1), nn.MaxPool2d(2)],
                 [nn.Conv2d(1, 4, 3, padding=0), nn.BatchNorm2d(4), nn.LeakyReLU(0.1), nn.MaxPool2d(2)],
                 [nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.1), nn.MaxPool2d(3, stride=1)],
                 [nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4, affine=False), nn.LeakyReLU(0.1), nn.MaxPool2d(2)],
                 [nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)]):
        assert not _applies(x, *mods)
        plain = nn.Sequential(*mods)
        fused = StemSequential(*copy.deepcopy(mods))
        assert torch.equal(fused(x), plain(x))


def test_mnist_q_uses_the_fused_stem_with_the_same_parameter_names():
    m = build_model("mnist")
    assert isinstance(m.Q, StemSequential)
    plain_names = [n for n, _ in nn.Sequential(*list(m.Q)).named_parameters()]
    assert [n for n, _ in m.Q.named_parameters()] == plain_names == [
        "0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias", "5.weight", "5.bias"]


def test_mnist_training_step_matches_the_unfused_network_in_float64():
    torch.manual_seed(0)
    m = build_model("mnist", fixed_point_options=dict(method="jfb", tol=1e-8, max_iter=200), channels_last=False)
    m = m.double().train()
    ref = copy.deepcopy(m)
    ref.Q = nn.Sequential(*list(ref.Q))
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    y = torch.arange(6) % 10
    grads = []
    for model in (m, ref):
        torch.manual_seed(1)  # the same S dropout mask
        logits, _ = model(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[1].items():
        assert (grads[0][name] - g).abs().max() <= 1e-9 * g.abs().max().clamp_min(1.0), name


def _run(code: str, **env) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=dict(os.environ, **env)).stdout.strip()


def test_retain_host_memory_is_applied_once_and_can_be_turned_off():
    code = ("from jfb import runtime; a = runtime.retain_host_memory(); b = runtime.retain_host_memory(); "
            "print(a, b, runtime.host_allocator())")
    on = _run(code, JFB_HOST_ALLOCATOR="retain").split()
    off = _run(code, JFB_HOST_ALLOCATOR="default").split()
    assert off == ["False", "False", "default"]
    import platform

    if platform.libc_ver()[0] == "glibc":
        assert on == ["True", "True", "glibc,", "retained"]
