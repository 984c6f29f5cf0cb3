"""The online Hadamard transform in front of a linear layer (QuaRot's ``down_proj`` rotation).

The input of a transformer's ``down_proj`` is ``SiLU(gate(x)) ⊙ up(x)``: no linear layer writes it, so a
rotation of it cannot be folded offline on both sides. QuaRot rotates it *online*: with an orthogonal
``Q``, ``y = x Wᵀ = (xQ)(WQ)ᵀ``, so the weight is rotated once offline (``W ← WQ``) and the activation at
run time (``x ← xQ``). Both sides use the very same transform, so the pair is exact up to rounding:

- sizes ``K·2^m`` (:func:`~polyquant.transforms.hadamard_size_supported`, e.g. 11008 = 172·64, 14336 =
  28·512): ``Q = (H_n/√n)ᵀ`` by the fast :func:`~polyquant.transforms.hadamard_transform`, computed in
  float32 (float64 for float64 inputs), ``O(n log n)`` per row;
- any other size: a seeded random orthogonal matrix (:class:`~polyquant.transforms.RandomOrthogonal`),
  applied as a dense product in the same dtypes.

:class:`OnlineHadamard` is a small wrapper whose child ``linear`` is the original layer, so
:func:`polyquant.quantize` (which swaps ``nn.Linear`` modules by qualified name) quantizes
``mlp.down_proj.linear`` and keeps the transform in front of it. It has no parameters or buffers of its own:
a checkpoint stores ``…down_proj.linear.weight``; rebuild the wrapper (same ``kind`` and ``seed``) before
loading one.

Example:
    >>> lin = nn.Linear(96, 8)
    >>> x = torch.randn(3, 96)
    >>> y = lin(x)
    >>> wrapped = fold_online_hadamard(lin)
    >>> bool(torch.allclose(wrapped(x), y, atol=1e-5)), wrapped.kind
    (True, 'hadamard')
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from polyquant.errors import FormatError, RecipeError
from polyquant.transforms.constructions import _unsupported_reason, hadamard_size_supported
from polyquant.transforms.hadamard import hadamard_transform
from polyquant.transforms.rotations import RandomOrthogonal, RotationKind

__all__ = ["OnlineHadamard", "fold_online_hadamard", "insert_online_hadamard"]


def _in_features(linear: nn.Module) -> int:
    weight = getattr(linear, "weight", None)
    if not isinstance(weight, Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise RecipeError(
            f"online Hadamard: {type(linear).__name__} has no floating 2-D weight (out, in); wrap an nn.Linear "
            "(before quantization: quantized modules cannot absorb the offline half of the rotation)"
        )
    return int(weight.shape[1])


class OnlineHadamard(nn.Module):
    """``linear(x Q)``: an orthogonal transform of the input applied at run time, then the wrapped layer.

    Constructing the wrapper does **not** rotate the weight (that would change the function); use
    :func:`fold_online_hadamard` / :func:`insert_online_hadamard`, which rotate ``W ← WQ`` first.

    Args:
        linear: the wrapped layer, stored as the child ``linear`` (an ``nn.Linear``, or any module with a
            2-D weight ``(out, in)``; after quantization a ``QLinear``).
        kind: ``"auto"`` (the fast Hadamard when ``in`` is ``K·2^m``, else a random orthogonal matrix),
            ``"hadamard"`` (or a :class:`FormatError`), or ``"orthogonal"``.
        seed: seeds the random orthogonal matrix (unused by the Hadamard kind).

    Attributes:
        n: the transformed size (the layer's input features).
        kind: ``"hadamard"`` or ``"orthogonal"``, as resolved.
        seed: the seed.

    Raises:
        RecipeError: ``linear`` has no 2-D weight, or ``kind`` is invalid.
        FormatError: ``kind="hadamard"`` for a size without a Hadamard matrix.

    Example:
        >>> m = OnlineHadamard(nn.Linear(90, 4))  # 90 has no Hadamard matrix
        >>> q = m.rotate(torch.eye(90, dtype=torch.float64))
        >>> m.kind, bool(torch.allclose(q @ q.T, torch.eye(90, dtype=torch.float64)))
        ('orthogonal', True)
    """

    def __init__(self, linear: nn.Module, *, kind: RotationKind = "auto", seed: int = 0) -> None:
        super().__init__()
        if kind not in ("auto", "hadamard", "orthogonal"):
            raise RecipeError(f"kind: {kind!r} is invalid; use 'auto', 'hadamard' or 'orthogonal'")
        n = _in_features(linear)
        supported = hadamard_size_supported(n)
        if kind == "hadamard" and not supported:
            raise FormatError(
                f"online Hadamard: {_unsupported_reason(n)}; use kind='auto' (a random orthogonal matrix instead)"
            )
        self.linear = linear
        self.n = n
        self.seed = seed
        self.kind = "hadamard" if supported and kind != "orthogonal" else "orthogonal"
        self._dense = RandomOrthogonal(n, seed) if self.kind == "orthogonal" else None

    def rotate(self, x: Tensor) -> Tensor:
        """``x Q`` along the last axis, computed in float32 (float64 stays float64), in ``x``'s dtype.

        Example:
            >>> m = OnlineHadamard(nn.Linear(12, 2))
            >>> x = torch.randn(5, 12)
            >>> bool(torch.allclose(m.rotate(x).norm(dim=-1), x.norm(dim=-1), atol=1e-5))
            True
        """
        if self._dense is not None:
            return self._dense.apply(x)
        return hadamard_transform(x)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        """``linear(x Q, *args, **kwargs)``."""
        return self.linear(self.rotate(x), *args, **kwargs)

    def extra_repr(self) -> str:
        """``n``, ``kind`` (and ``seed`` for the orthogonal kind), shown by ``print(model)``."""
        return f"n={self.n}, kind={self.kind!r}" + (f", seed={self.seed}" if self.kind == "orthogonal" else "")


def fold_online_hadamard(linear: nn.Module, *, kind: RotationKind = "auto", seed: int = 0) -> OnlineHadamard:
    """Rotate ``linear``'s weight ``W ← WQ`` (in float64) and wrap it in :class:`OnlineHadamard`, exactly.

    The weight keeps its dtype; the bias is unchanged (the output space is not rotated).

    Raises:
        RecipeError: as :class:`OnlineHadamard`.
        FormatError: as :class:`OnlineHadamard`.

    Example:
        >>> lin = nn.Linear(160, 4, dtype=torch.float64)  # 160 = 20·8
        >>> x = torch.randn(2, 160, dtype=torch.float64)
        >>> y = lin(x)
        >>> bool(torch.allclose(fold_online_hadamard(lin)(x), y))
        True
    """
    wrapper = OnlineHadamard(linear, kind=kind, seed=seed)
    weight = linear.weight
    assert isinstance(weight, Tensor)
    with torch.no_grad():
        weight.copy_(wrapper.rotate(weight.detach().to(torch.float64)).to(weight.dtype))
    return wrapper


def insert_online_hadamard(
    model: nn.Module, name: str, *, kind: RotationKind = "auto", seed: int = 0
) -> OnlineHadamard:
    """Replace the submodule ``name`` of ``model`` by ``fold_online_hadamard(submodule)``, in place.

    Raises:
        RecipeError: no such submodule, the submodule is already wrapped, or it has no 2-D weight.
        FormatError: ``kind="hadamard"`` for a size without a Hadamard matrix.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 24), nn.ReLU(), nn.Linear(24, 8))
        >>> insert_online_hadamard(model, "2").n, type(model[2]).__name__
        (24, 'OnlineHadamard')
    """
    parent_name, _, attr = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name)
        module = parent.get_submodule(attr)
    except AttributeError:
        raise RecipeError(f"online Hadamard: the model has no submodule {name!r}; check the module name") from None
    if isinstance(module, OnlineHadamard):
        raise RecipeError(
            f"online Hadamard: {name!r} already has an online Hadamard transform (was the model rotated "
            "before?); rotate the original model once"
        )
    wrapper = fold_online_hadamard(module, kind=kind, seed=seed)
    setattr(parent, attr, wrapper)
    return wrapper
