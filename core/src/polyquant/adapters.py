"""The generic model adapter, and adapter selection.

Domain plugins register adapters that know their architectures (decoder blocks, norm→linear groups,
modules to keep in high precision). The :class:`GenericAdapter` works for any ``nn.Module`` from
structure alone and is the fallback (priority ``-100``):

* ``blocks``: the children of the ``nn.ModuleList`` of structurally identical modules (same class,
  same parameter names and shapes) holding the most parameters — the layer stack of a transformer,
  not the expert list inside one layer; the whole model as one block when there is no such list.
* ``default_exclude``: every ``nn.Embedding``, the output head (``get_output_embeddings()`` of
  Hugging Face models, any module named ``lm_head``), and any module whose weight is the same tensor
  as an embedding's (tied weights).

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4))
    >>> GenericAdapter().default_exclude(model)
    ['0']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from polyquant.errors import RecipeError
from polyquant.plugins.records import AdapterInfo, ModelAdapter

if TYPE_CHECKING:
    from collections.abc import Hashable

__all__ = ["GenericAdapter", "builtin_adapters", "select_adapter"]


def _structure(module: nn.Module) -> Hashable:
    """A key equal for structurally identical modules (class + parameter names and shapes)."""
    params = tuple((name, tuple(p.shape)) for name, p in module.named_parameters())
    return (type(module), params)


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class GenericAdapter:
    """Structure-only adapter for any ``nn.Module`` (see the module docstring for the rules).

    Example:
        >>> import torch
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layers = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(3))
        >>> [name for name, _ in GenericAdapter().blocks(Net())]
        ['layers.0', 'layers.1', 'layers.2']
    """

    name = "generic"

    def matches(self, model: nn.Module) -> bool:
        """Always true: the generic adapter understands every model."""
        return True

    def blocks(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The repeated blocks of ``model``, or ``[("", model)]`` when it has none."""
        best: tuple[int, int, str, nn.ModuleList] | None = None
        for name, module in model.named_modules():
            if not isinstance(module, nn.ModuleList) or len(module) < 2:
                continue
            keys = {_structure(child) for child in module}
            if len(keys) != 1:
                continue
            size = _num_params(module)
            if best is None or (size, len(module)) > (best[0], best[1]):
                best = (size, len(module), name, module)
        if best is None:
            return [("", model)]
        _, _, prefix, layers = best
        return [(f"{prefix}.{i}" if prefix else str(i), child) for i, child in enumerate(layers)]

    def default_exclude(self, model: nn.Module) -> list[str]:
        """Names of embeddings, output heads and modules tied to an embedding."""
        names: list[str] = []
        embedding_weights: set[int] = set()
        modules = dict(model.named_modules())
        for name, module in modules.items():
            if isinstance(module, nn.Embedding):
                names.append(name)
                embedding_weights.add(id(module.weight))
        head = None
        get_head = getattr(model, "get_output_embeddings", None)
        if callable(get_head):
            try:
                head = get_head()
            except (AttributeError, NotImplementedError):  # models that do not implement it
                head = None
        for name, module in modules.items():
            if name in names or not name:
                continue
            weight = getattr(module, "weight", None)
            is_tied = weight is not None and id(weight) in embedding_weights
            if module is head or name.rsplit(".", 1)[-1] == "lm_head" or is_tied:
                names.append(name)
        return names


def builtin_adapters() -> list[AdapterInfo]:
    """The core's adapters: ``generic`` at priority ``-100`` so every domain adapter wins over it."""
    return [AdapterInfo("generic", GenericAdapter, priority=-100, description="any nn.Module, from structure alone")]


def select_adapter(model: nn.Module, name: str | ModelAdapter | None = None) -> ModelAdapter:
    """The adapter for ``model``: the one named ``name``, or the highest-priority one that matches.

    Args:
        model: the model.
        name: an adapter name from the registry, an adapter instance (returned as is), or ``None``.

    Raises:
        RecipeError: when ``name`` is not registered (listing the registered adapters).

    Example:
        >>> import torch
        >>> select_adapter(torch.nn.Linear(2, 2)).name
        'generic'
    """
    if name is not None and not isinstance(name, str):
        if not isinstance(name, ModelAdapter):
            raise RecipeError(
                f"adapter: {type(name).__name__} does not implement ModelAdapter "
                "(name, matches, blocks, default_exclude)"
            )
        return name
    from polyquant.plugins import get_plugin_manager

    adapters = get_plugin_manager().get_adapters()
    if name is not None:
        for info in adapters:
            if info.name == name:
                return info.factory()
        raise RecipeError(
            f"adapter: {name!r} is not registered; "
            f"registered adapters: {', '.join(a.name for a in adapters) or 'none'}. "
            "Install the plugin that provides it, or omit adapter= to pick one automatically"
        )
    for info in adapters:
        adapter = info.factory()
        if adapter.matches(model):
            return adapter
    return GenericAdapter()
