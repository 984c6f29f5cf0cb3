"""The :class:`Quantizer` protocol and the registry lookup that builds quantizers from recipes.

A quantizer decides *how* a weight is rounded (which scales, zeros, clipping, error feedback); the
:class:`~polyquant.formats.spec.FormatSpec` decides the *encoding*. Quantizers are registered through the
``polyquant_register_quantizers`` hook as :class:`~polyquant.plugins.QuantizerInfo` records whose
``factory`` (usually the class itself) is called with the recipe's ``method_args``.

Weights reach a quantizer as 2-D ``(out_features, reduction)`` matrices: Linear weights as they are, conv
weights flattened to ``(out_channels, in_channels / groups · prod(kernel))``, embedding tables as
``(num_embeddings, dim)``.

Example:
    >>> quantizer = make_quantizer("mse", {"grid": 50})
    >>> quantizer.name
    'mse'
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from polyquant.errors import RecipeError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import Tensor, nn

    from polyquant.calibration import ModelInput
    from polyquant.formats.spec import FormatSpec
    from polyquant.qtensor import QTensor

__all__ = ["ModelPreparer", "Quantizer", "make_quantizer"]


@runtime_checkable
class Quantizer(Protocol):
    """A weight quantization algorithm.

    Attributes:
        name: the registry name (``rtn``, ``mse``, ``gptq``, ...).
        needs_calibration: whether :meth:`quantize_weight` needs ``stats`` from calibration data.
            :func:`polyquant.quantize` refuses to run such a quantizer without calibration data.

    The ``stats`` mapping that :func:`polyquant.quantize` passes (when calibration data is given and the
    quantizer needs it) has, per module, computed on the module's inputs flattened to
    ``(rows, reduction)`` (conv inputs unfolded, groups=1 only):

    * ``hessian``: ``(K, K)`` float32, ``2/N · Σ x xᵀ`` (GPTQ's convention);
    * ``input_absmean`` / ``input_absmax``: ``(K,)`` float32 per input feature;
    * ``num_samples``: scalar, the number of rows ``N`` seen.

    Example:
        >>> class Identity:
        ...     name = "identity"
        ...     needs_calibration = False
        ...     def quantize_weight(self, weight, spec, *, stats=None):
        ...         return spec.quantize(weight)
        >>> isinstance(Identity(), Quantizer)
        True
    """

    name: str
    needs_calibration: bool

    def quantize_weight(
        self, weight: Tensor, spec: FormatSpec, *, stats: Mapping[str, Tensor] | None = None
    ) -> QTensor:
        """Quantize a 2-D weight to ``spec``; must not modify ``weight``."""
        ...


@runtime_checkable
class ModelPreparer(Protocol):
    """A quantizer that also rewrites the model before calibration (AWQ folds its scales into norms).

    :func:`polyquant.quantize` calls :meth:`prepare_model` once, with the calibration inputs, before it
    collects statistics; the rewrite must keep the model's function (in exact arithmetic).

    Example:
        >>> class Noop:
        ...     name, needs_calibration = "noop", False
        ...     def quantize_weight(self, weight, spec, *, stats=None): ...
        ...     def prepare_model(self, model, calibration, plan): return []
        >>> isinstance(Noop(), ModelPreparer)
        True
    """

    def prepare_model(
        self, model: nn.Module, calibration: Sequence[ModelInput], plan: Mapping[str, FormatSpec]
    ) -> Sequence[str]:
        """Rewrite ``model`` in place; return notes for the report.

        ``plan`` maps the planned module names to their formats; a preparer may replace entries (mixed
        precision assigns each module its own format), and those formats are used.
        """
        ...


def make_quantizer(method: str, method_args: Mapping[str, Any] | None = None) -> Quantizer:
    """Build the quantizer registered as ``method`` with ``method_args``.

    Raises:
        RecipeError: for an unknown method (listing the registered ones) or arguments its factory
            does not accept (listing the accepted ones).

    Example:
        >>> make_quantizer("rtn").needs_calibration
        False
    """
    from polyquant.plugins import get_plugin_manager

    registry = get_plugin_manager().get_quantizers()
    if not isinstance(method, str) or method not in registry:
        raise RecipeError(f"method: {method!r} is not a registered quantizer; allowed: {', '.join(sorted(registry))}")
    info = registry[method]
    args = dict(method_args or {})
    try:
        signature = inspect.signature(info.factory)
    except (TypeError, ValueError):  # builtins without signatures: let the call decide
        signature = None
    if signature is not None:
        try:
            signature.bind(**args)
        except TypeError as exc:
            accepted = [p for p in signature.parameters if p not in ("self", "args", "kwargs")]
            raise RecipeError(
                f"method_args: {exc} for method {method!r}; accepted: {', '.join(accepted) or 'no arguments'}"
            ) from None
    try:
        quantizer = info.factory(**args)
    except RecipeError as exc:
        raise RecipeError(f"method_args.{exc}") from None
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"method_args: invalid arguments for method {method!r}: {exc}") from None
    if not isinstance(quantizer, Quantizer):
        raise RecipeError(
            f"method: the factory of {method!r} returned {type(quantizer).__name__}, which is not a Quantizer"
        )
    return quantizer
