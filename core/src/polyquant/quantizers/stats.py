"""Per-module input statistics for quantizers that need calibration (the ``stats`` of :class:`Quantizer`).

A module's inputs are first flattened to ``(rows, K)`` matrices whose ``K`` matches the weight's 2-D
view (:func:`input_rows`): Linear inputs reshape to ``(-1, in_features)``; conv inputs (``groups == 1``)
are unfolded into patches, ``(B · positions, in_channels · prod(kernel))``, the same column order as
``weight.flatten(1)``. :class:`InputStats` then keeps running float32 statistics:

* ``hessian``: ``H = 2/N · Σ x xᵀ`` as a running average (GPTQ's convention);
* ``input_absmean`` / ``input_absmax``: per column of ``x``;
* ``num_samples``: ``N``.

Example:
    >>> import torch
    >>> stats = InputStats()
    >>> stats.add(torch.ones(4, 3))
    >>> round(stats.as_dict()["hessian"][0, 0].item(), 5)
    2.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["InputStats", "input_rows"]


def input_rows(module: nn.Module, x: Tensor) -> Tensor | None:
    """``x`` as the ``(rows, K)`` matrix that multiplies the module's 2-D weight view, or ``None``.

    ``None`` for modules without such a view (embeddings, grouped convolutions, non-zero padding modes).

    Example:
        >>> conv = torch.nn.Conv1d(2, 4, 3)
        >>> input_rows(conv, torch.randn(1, 2, 5)).shape
        torch.Size([3, 6])
    """
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups == 1 and module.padding_mode == "zeros":
        if isinstance(module.padding, str):
            return None  # 'same' padding is asymmetric for even kernels; not expressible as unfold padding
        batched = x if x.dim() == module.weight.dim() else x.unsqueeze(0)
        if isinstance(module, nn.Conv1d):
            batched = batched.unsqueeze(2)
            kernel, stride, pad, dil = (
                (1, *module.kernel_size),
                (1, *module.stride),
                (0, *module.padding),
                (1, *module.dilation),
            )
        else:
            kernel, stride, pad, dil = module.kernel_size, module.stride, module.padding, module.dilation
        patches = F.unfold(batched, kernel, dilation=dil, padding=pad, stride=stride)  # (B, C·k, L)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return None


class InputStats:
    """Running input statistics of one module (see the module docstring).

    Example:
        >>> stats = InputStats()
        >>> stats.add(torch.tensor([[1.0, -2.0]]))
        >>> stats.as_dict()["input_absmax"].tolist()
        [1.0, 2.0]
    """

    def __init__(self) -> None:
        self.hessian: Tensor | None = None
        self.abssum: Tensor | None = None
        self.absmax: Tensor | None = None
        self.count = 0

    def add(self, rows: Tensor) -> None:
        """Add a ``(N, K)`` batch of input rows."""
        x = rows.detach().float()
        n = x.shape[0]
        if n == 0:
            return
        if self.hessian is None:
            k = x.shape[1]
            self.hessian = torch.zeros(k, k, device=x.device)
            self.abssum = torch.zeros(k, device=x.device)
            self.absmax = torch.zeros(k, device=x.device)
        assert self.abssum is not None and self.absmax is not None
        total = self.count + n
        self.hessian.mul_(self.count / total)
        scaled = x * (2.0 / total) ** 0.5
        self.hessian.addmm_(scaled.T, scaled)
        self.abssum += x.abs().sum(0)
        self.absmax = torch.maximum(self.absmax, x.abs().amax(0))
        self.count = total

    def as_dict(self) -> dict[str, Tensor]:
        """The statistics as the ``stats`` mapping quantizers receive (empty before any data)."""
        if self.hessian is None or self.abssum is None or self.absmax is None:
            return {}
        return {
            "hessian": self.hessian,
            "input_absmean": self.abssum / self.count,
            "input_absmax": self.absmax,
            "num_samples": torch.tensor(self.count),
        }
