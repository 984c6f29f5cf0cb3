"""Activation quantization settings (W8A8, W4A8, FP8 activations).

Example:
    >>> ActivationSpec(format="int8", granularity="token", dynamic=True)
    ActivationSpec(format='int8', granularity='token', dynamic=True, ...)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from polyquant.errors import RecipeError

__all__ = ["ActivationSpec"]

ACT_FORMATS = ("int8", "fp8_e4m3", "fp8_e5m2", "int4")
ACT_GRANULARITIES = ("tensor", "token")
ACT_OBSERVERS = ("minmax", "percentile", "mse")


@dataclass(frozen=True)
class ActivationSpec:
    """How a quantized module quantizes its input activations.

    Attributes:
        format: element format of activations (one of ``int8``, ``fp8_e4m3``, ``fp8_e5m2``, ``int4``).
        granularity: ``"token"`` (one scale per row of the flattened input) or ``"tensor"``.
        dynamic: compute scales at run time from each input; ``False`` uses a calibrated static scale.
        symmetric: symmetric scaling (zero-point free). Asymmetric is only allowed for integer formats.
        observer: how static scales are calibrated: ``minmax``, ``percentile`` or ``mse``.
        percentile: the percentile of |x| used by the ``percentile`` observer.
    """

    format: str = "int8"
    granularity: Literal["tensor", "token"] = "token"
    dynamic: bool = True
    symmetric: bool = True
    observer: Literal["minmax", "percentile", "mse"] = "minmax"
    percentile: float = 99.99

    def __post_init__(self) -> None:
        if self.format not in ACT_FORMATS:
            raise RecipeError(
                f"activations.format: {self.format!r} is not supported; allowed: {', '.join(ACT_FORMATS)}"
            )
        if self.granularity not in ACT_GRANULARITIES:
            raise RecipeError(f"activations.granularity: {self.granularity!r}; allowed: {', '.join(ACT_GRANULARITIES)}")
        if self.observer not in ACT_OBSERVERS:
            raise RecipeError(f"activations.observer: {self.observer!r}; allowed: {', '.join(ACT_OBSERVERS)}")
        if not 50.0 < self.percentile <= 100.0:
            raise RecipeError(f"activations.percentile: {self.percentile} must lie in (50, 100]")
        if not self.symmetric and not self.format.startswith("int"):
            raise RecipeError("activations.symmetric: asymmetric scaling needs an integer format (int8/int4)")
        if not self.dynamic and self.granularity == "token":
            raise RecipeError("activations.granularity: static (dynamic: false) activation scales must be per 'tensor'")

    @property
    def name(self) -> str:
        """Short label such as ``int8-token-dyn``."""
        return f"{self.format}-{self.granularity}-{'dyn' if self.dynamic else 'static'}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActivationSpec:
        """Build from a recipe mapping; unknown keys raise :class:`RecipeError`."""
        allowed = set(cls.__dataclass_fields__)
        unknown = set(data) - allowed
        if unknown:
            raise RecipeError(
                f"activations: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}"
            )
        return cls(**data)
