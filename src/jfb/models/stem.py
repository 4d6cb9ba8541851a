"""A fused first stage ``conv -> BatchNorm (batch statistics) -> LeakyReLU -> MaxPool`` for training.

The MNIST network's Q starts with conv3x3 1->16 on the 28x28 image, batch norm, LeakyReLU and a 3x3
max pool. Run op by op with autograd, that stage works on 100x16x28x28 tensors four times forward
and five times backward (BN, activation, pool, their backwards, the zero-filled pool gradient, the
conv's weight gradient), although only one position in nine survives the pool.
:class:`StemSequential` computes the same function and the same gradients from far less (forward
plus backward of the stage at batch 100 on 2 CPU cores: 6.2 against 9.2 ms, about 3 % of a step):

* LeakyReLU is increasing, so it commutes with the max pool and is applied to the pooled map only.
* The batch norm of channel c is ``y = gamma_c (z - mu_c) / sigma_c + beta_c``, increasing in z when
  ``gamma_c >= 0`` and decreasing otherwise, so the pool picks the max (or the min) of the conv output
  z itself; only the selected values are normalised.
* With X the im2col patch of a position (``Cin*k*k`` values), ``z_c = w_c . X + b_c``. The batch
  statistics follow from the patch mean m and covariance C over all ``N*H*W`` positions:
  ``mu_c = w_c . m + b_c``, ``sigma_c^2 = w_c C w_c^T`` (C from the centred patches, a 9x9 matrix
  for MNIST; the small algebra after it in float64). The conv bias cancels: its gradient is exactly
  zero here (the unfused stage returns rounding noise for it).
* Backward: with ``g`` the gradient of the normalised selected values and ``r = 1/sqrt(var + eps)``,
  ``dL/dw_c = r_c (sum_sel g X_sel - m sum_sel g) - r_c^2 (sum_sel g zhat) C w_c^T``; the sum over
  selected patches is one matrix product with the gradient scattered to the selected positions.

The result equals the unfused stage up to rounding (float64 tests: 1e-12), including the running
statistics' update (unbiased variance, momentum). Gradient ties in the pool fall where PyTorch's
max pool puts them on z (the unfused stage breaks ties on the rounded BN output).
Used only on a CPU (where it was measured), in training with autograd, on an input that needs no
gradient (the network's data); elsewhere the modules run one by one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _patches(x: torch.Tensor, k: int) -> torch.Tensor:
    """im2col columns: (Cin*k*k, N*H*W), rows ordered as ``weight.reshape(C, -1)`` (stride 1, 'same').
    This (K, M) layout makes the long products below run 3x faster than with (M, K) on a CPU."""
    n, c_in, h, w = x.shape
    pad = k // 2
    xp = F.pad(x, (pad, pad, pad, pad))
    cols = torch.stack([xp[:, :, i:i + h, j:j + w] for i in range(k) for j in range(k)], dim=0)  # (kk,N,Cin,H,W)
    return cols.permute(2, 0, 1, 3, 4).reshape(c_in * k * k, n * h * w)


class _ConvBNPoolAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, bn_weight, bn_bias, eps: float, slope: float, pool: int):
        n, _, h, w = x.shape
        c, k = weight.shape[0], weight.shape[-1]
        z = F.conv2d(x, weight, bias, padding=k // 2)
        # centred patches Pc = X - m over all M positions, their covariance, the batch statistics of z
        P = _patches(x, k)
        m_count = P.shape[1]
        mean_p = P.mean(dim=1, keepdim=True)
        Pc = P - mean_p
        cov = (Pc @ Pc.T).double() / m_count
        w64 = weight.reshape(c, -1).double()
        var = ((w64 @ cov) * w64).sum(dim=1).clamp_min(0.0)
        mean_z = w64 @ mean_p[:, 0].double() + (bias.double() if bias is not None else 0.0)
        r = (var + eps).rsqrt()
        view = (1, c, 1, 1)
        # pool z where the batch norm is increasing, -z where it is decreasing (gamma < 0)
        if bool((bn_weight < 0).any()):
            sign = torch.where(bn_weight < 0, -1.0, 1.0).to(z.dtype).view(view)
            pooled, idx = F.max_pool2d(z * sign, pool, return_indices=True)
            z_sel = pooled * sign
        else:
            z_sel, idx = F.max_pool2d(z, pool, return_indices=True)
        zhat = (z_sel - mean_z.to(z.dtype).view(view)) * r.to(z.dtype).view(view)
        p = zhat * bn_weight.view(view) + bn_bias.view(view)
        out = F.leaky_relu(p, slope)
        ctx.save_for_backward(Pc, idx, zhat, p, bn_weight, w64, cov, r)
        ctx.slope, ctx.shape, ctx.has_bias, ctx.weight_shape = slope, (n, c, h * w), bias is not None, weight.shape
        unbiased = (var * m_count / max(m_count - 1, 1)).to(z.dtype)
        ctx.mark_non_differentiable(unbiased)
        return out, mean_z.to(z.dtype), unbiased

    @staticmethod
    def backward(ctx, g_out, _g_mean, _g_var):
        Pc, idx, zhat, p, bn_weight, w64, cov, r = ctx.saved_tensors
        n, c, hw = ctx.shape
        g_p = torch.where(p > 0, g_out, g_out * ctx.slope)
        g_bn_bias = g_p.sum(dim=(0, 2, 3))
        g_bn_weight = (g_p * zhat).sum(dim=(0, 2, 3))
        g = g_p * bn_weight.view(1, c, 1, 1)  # gradient of zhat at the selected positions
        s2 = (g * zhat).sum(dim=(0, 2, 3)).double()
        # sum over selected patches of g * (X - m): scatter g to its positions (column n*H*W + idx of row c)
        # in a (C, M) matrix, then one (C, M) x (M, K) product with the centred patches
        dense = g.new_zeros(c, n, hw)
        dense.scatter_add_(2, idx.reshape(n, c, -1).transpose(0, 1), g.reshape(n, c, -1).transpose(0, 1))
        t1 = (dense.reshape(c, -1) @ Pc.T).double()  # (C, K)
        g_w = r[:, None] * t1 - (r * r * s2)[:, None] * (w64 @ cov)
        g_weight = g_w.to(g_out.dtype).reshape(ctx.weight_shape)
        g_bias = torch.zeros(c, dtype=g_out.dtype, device=g_out.device) if ctx.has_bias else None
        return None, g_weight, g_bias, g_bn_weight, g_bn_bias, None, None, None


def _applies(x: torch.Tensor, conv, bn, act, pool) -> bool:
    if not (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and isinstance(act, nn.LeakyReLU)
            and isinstance(pool, nn.MaxPool2d)):
        return False
    k = conv.kernel_size[0]
    return (x.device.type == "cpu" and bn.training and torch.is_grad_enabled() and not x.requires_grad and bn.affine
            and conv.kernel_size == (k, k) and k % 2 == 1 and conv.padding == (k // 2, k // 2)
            and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and isinstance(pool.kernel_size, int)
            and pool.stride in (None, pool.kernel_size) and pool.padding == 0 and pool.dilation == 1
            and not pool.ceil_mode and not pool.return_indices)


class StemSequential(nn.Sequential):
    """``nn.Sequential`` whose first four modules, ``conv, BatchNorm2d, LeakyReLU, MaxPool2d``, run fused
    in training (see the module docstring); the rest run as usual. Same children, parameter names and
    results as the plain ``nn.Sequential`` of the same modules."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, act, pool = self[0], self[1], self[2], self[3]
        if not _applies(x, conv, bn, act, pool):
            return super().forward(x)
        x, mean, var = _ConvBNPoolAct.apply(x, conv.weight, conv.bias, bn.weight, bn.bias, bn.eps,
                                            act.negative_slope, pool.kernel_size)
        if bn.track_running_stats:
            with torch.no_grad():
                bn.num_batches_tracked += 1
                factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                bn.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
                bn.running_var.mul_(1 - factor).add_(var, alpha=factor)
        for module in list(self)[4:]:
            x = module(x)
        return x
