"""Exception hierarchy of polyquant.

Every error a user can provoke derives from :class:`PolyquantError`. The CLI prints such errors as one
line (no traceback unless ``--debug``); messages name the problem *and* the fix.
"""

from __future__ import annotations

__all__ = [
    "CalibrationError",
    "CheckpointError",
    "FormatError",
    "KernelError",
    "PluginConflictError",
    "PluginError",
    "PolyquantError",
    "RecipeError",
]


class PolyquantError(Exception):
    """Base class of every error raised on purpose by polyquant."""


class FormatError(PolyquantError, ValueError):
    """Unknown format name, or a tensor that does not fit a format (shape, dtype, group size)."""


class RecipeError(PolyquantError, ValueError):
    """A recipe field has a wrong value; the message names the field and the allowed values."""


class KernelError(PolyquantError, RuntimeError):
    """No kernel can run an op, or a forced kernel is unavailable."""


class CalibrationError(PolyquantError, ValueError):
    """Calibration data is missing or invalid (NaN/Inf, wrong shape)."""


class CheckpointError(PolyquantError, OSError):
    """A checkpoint is missing, truncated, tampered with, or from an incompatible version."""


class PluginError(PolyquantError, RuntimeError):
    """A plugin failed to load, raised in a hook, or returned malformed records."""


class PluginConflictError(PluginError):
    """Two plugins provide the same name for the same kind of record.

    Attributes:
        kind: the record kind (``"format"``, ``"kernel"``, ...).
        name: the contested name.
        first: distribution that registered the name first (it is kept).
        second: distribution whose registration was refused.
    """

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        self.kind, self.name, self.first, self.second = kind, name, first, second
        super().__init__(
            f"{kind} {name!r} is provided by both {first!r} and {second!r}; {second!r} was not loaded. "
            f"Uninstall one of them or disable one with POLYQUANT_DISABLE_PLUGINS."
        )
