"""``QEmbedding``: an embedding table with quantized rows, dequantized only for the rows looked up.

The table ``(num_embeddings, embedding_dim)`` is quantized like a Linear weight (scales per row, per group
of a row, or per tensor). On lookup only the requested rows' codes and scales are gathered and
dequantized, so memory stays at the quantized size. Formats whose layout does not keep rows
independent (flat blocks spanning rows, 2-D block scales, scales per column) fall back to dequantizing
the table per call; :attr:`QEmbedding.row_gather` says which path a module uses.

Example:
    >>> import torch
    >>> emb = QEmbedding.from_embedding(torch.nn.Embedding(100, 64), "int8")
    >>> emb(torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 64])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyquant import kernels
from polyquant.errors import FormatError
from polyquant.nn.base import QuantizedModule
from polyquant.nn.qlinear import resolve_spec

if TYPE_CHECKING:
    from polyquant.activations import ActivationSpec
    from polyquant.formats.spec import FormatSpec
    from polyquant.qtensor import QTensor
    from polyquant.quantizers.protocol import Quantizer

__all__ = ["QEmbedding", "gather_rows"]


def _rows_independent(qweight: QTensor) -> bool:
    """Whether each row of ``qweight`` has its own codes, scales, zeros and levels (or shares scalars)."""
    granularity = qweight.spec.granularity
    return granularity.kind in ("tensor", "group") or (granularity.kind == "channel" and granularity.axis % 2 == 0)


def gather_rows(qweight: QTensor, index: Tensor) -> QTensor:
    """The quantized rows ``index`` (1-D) of a 2-D ``qweight``, without touching the other rows.

    Codes are packed row by row, so selecting rows of ``packed`` selects their codes; per-row and
    per-group scales, zeros and codebook levels are selected the same way, per-tensor ones are shared.
    Only valid for row-independent granularities (per tensor, per output channel, per group).

    Example:
        >>> import polyquant.formats as formats
        >>> qt = formats.get("int4").with_options(group_size=16).quantize(torch.randn(10, 32))
        >>> torch.equal(gather_rows(qt, torch.tensor([3, 1])).dequantize(), qt.dequantize()[[3, 1]])
        True
    """
    from polyquant.qtensor import QTensor

    if not _rows_independent(qweight):
        raise FormatError(f"rows of a {qweight.spec.granularity}-scaled tensor are not stored independently")
    per_row = qweight.spec.granularity.kind != "tensor"

    def pick(t: Tensor | None, row_aligned: bool) -> Tensor | None:
        return None if t is None else (t.index_select(0, index) if row_aligned else t)

    return QTensor(
        packed=qweight.packed.index_select(0, index),
        scale=pick(qweight.scale, per_row),
        zero=pick(qweight.zero, per_row),
        spec=qweight.spec,
        shape=torch.Size((int(index.numel()), *qweight.shape[1:])),
        dtype=qweight.dtype,
        tensor_scale=qweight.tensor_scale,
        levels=pick(qweight.levels, per_row and qweight.levels is not None and qweight.levels.dim() > 1),
    )


class QEmbedding(QuantizedModule):
    """``nn.Embedding`` lookup over a quantized table (``max_norm`` and sparse gradients unsupported).

    Args:
        weight: the quantized ``(num_embeddings, embedding_dim)`` table.
        padding_idx: as in ``nn.Embedding`` (only recorded; the table is not trained).

    Example:
        >>> import polyquant.formats as formats
        >>> table = formats.get("int8").quantize(torch.randn(50, 16))
        >>> QEmbedding(table).num_embeddings
        50
    """

    _kernel_op = "dequantize"

    def __init__(self, weight: QTensor, padding_idx: int | None = None) -> None:
        super().__init__()
        if len(weight.shape) != 2:
            raise FormatError(
                f"QEmbedding needs a 2-D (num_embeddings, embedding_dim) table, got shape {tuple(weight.shape)}"
            )
        self.num_embeddings, self.embedding_dim = (int(s) for s in weight.shape)
        self.padding_idx = padding_idx
        self._init_quantized(weight, None, None, None)
        self.row_gather = _rows_independent(weight)

    @classmethod
    def from_embedding(
        cls,
        embedding: nn.Embedding,
        spec: FormatSpec | str,
        *,
        quantizer: Quantizer | None = None,
        act: ActivationSpec | None = None,
        act_scale: Tensor | float | None = None,
        stats: Mapping[str, Tensor] | None = None,
    ) -> QEmbedding:
        """Quantize an ``nn.Embedding``'s table (rows are the scale channels).

        ``act``/``act_scale`` exist for a uniform converter signature and must be ``None``: an embedding's
        input is integer indices.

        Example:
            >>> QEmbedding.from_embedding(torch.nn.Embedding(10, 32), "int8").embedding_dim
            32
        """
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"QEmbedding.from_embedding expects an nn.Embedding, got {type(embedding).__name__}")
        if act is not None or act_scale is not None:
            raise FormatError(
                "QEmbedding takes integer indices; activation quantization does not apply (act must be None)"
            )
        if embedding.max_norm is not None or embedding.sparse:
            raise FormatError("QEmbedding does not support max_norm or sparse embeddings; exclude this module")
        from polyquant.quantizers.rtn import RTNQuantizer

        quantizer = quantizer or RTNQuantizer()
        qweight = quantizer.quantize_weight(embedding.weight.detach(), resolve_spec(spec), stats=stats)
        return cls(qweight, embedding.padding_idx)

    def forward(self, index: Tensor) -> Tensor:
        """Rows ``index`` (any shape of integer indices), dequantized to the table's dtype."""
        if index.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"QEmbedding expects integer indices, got {index.dtype}")
        weight = self.weight
        if not self.row_gather:
            return F.embedding(index, kernels.dequantize(weight, cache=self._kernel_cache))
        flat = index.reshape(-1)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings):
            raise IndexError(f"QEmbedding index out of range [0, {self.num_embeddings})")
        unique, inverse = torch.unique(flat, return_inverse=True)
        rows = gather_rows(weight, unique).dequantize()
        return rows.index_select(0, inverse).reshape(*index.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        """Table size, lookup path (rows gathered or whole table), format and bits/weight."""
        gather = "rows" if self.row_gather else "table"
        return f"{self.num_embeddings}, {self.embedding_dim}, lookup={gather}, {self._describe()}"
