"""Bit packing: dense 1–8 bit codes in bytes, and the int32 layouts of GPTQ, AWQ and bitsandbytes.

polyquant's own layout (:func:`pack`) is a little-endian bit stream per row: the codes of the last
axis are concatenated least-significant bit first, so code ``i`` occupies bits ``i·b .. i·b+b-1`` of
the row, and widths that do not divide 8 (3, 5, 6, 7) run across byte boundaries. For 4-bit codes this
puts the even element in the low nibble (as NVFP4 and torch's int4 tensors do). Each row is padded
with zero bits to a whole byte.

Interop layouts:

* :func:`pack_gptq` — GPTQ ``qweight``: int32 ``[in·bits/32, out]``, codes along the *input* axis, LSB
  first (codes 0..7 → ``0x76543210`` for 4 bits); 3-bit codes straddle words exactly as GPTQ does.
* :func:`pack_awq` — AutoAWQ GEMM ``qweight``: int32 ``[in, out/8]``, 4-bit codes along the *output*
  axis in the interleaved order ``[0, 2, 4, 6, 1, 3, 5, 7]`` (codes 0..7 → ``0x75316420``).
* :func:`pack_nibbles_high_first` — bitsandbytes NF4/FP4: two codes per byte, the first in the high
  nibble.

Example:
    >>> import torch
    >>> pack(torch.tensor([[1, 2, 3]], dtype=torch.uint8), 4)
    tensor([[33,  3]], dtype=torch.uint8)
    >>> unpack(torch.tensor([[33, 3]], dtype=torch.uint8), 4, 3)
    tensor([[1, 2, 3]], dtype=torch.uint8)
"""

from __future__ import annotations

import torch

from polyquant.errors import FormatError

__all__ = [
    "AWQ_ORDER",
    "pack",
    "pack_awq",
    "pack_gptq",
    "pack_int32",
    "pack_nibbles_high_first",
    "packed_size",
    "swap_nibbles",
    "unpack",
    "unpack_awq",
    "unpack_gptq",
    "unpack_int32",
    "unpack_nibbles_high_first",
]

#: AWQ's interleaving of eight 4-bit codes in an int32 (nibble i holds code ``AWQ_ORDER[i]``).
AWQ_ORDER: tuple[int, ...] = (0, 2, 4, 6, 1, 3, 5, 7)


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
        raise FormatError(f"bits must be an integer in 1..8, got {bits!r}")


def _check_codes(codes: torch.Tensor, bits: int) -> None:
    if not isinstance(codes, torch.Tensor) or codes.dtype != torch.uint8:
        got = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise FormatError(f"codes must be a torch.uint8 tensor, got {got}; convert with .to(torch.uint8)")
    if codes.dim() == 0:
        raise FormatError("codes must have at least one dimension (packing runs along the last axis)")
    if bits < 8 and codes.numel() and int(codes.max()) >= 1 << bits:
        raise FormatError(
            f"code {int(codes.max())} does not fit in {bits} bits (valid codes are 0..{(1 << bits) - 1}); "
            f"pack with a wider bit width or check how the codes were produced"
        )


def packed_size(length: int, bits: int) -> int:
    """Bytes that :func:`pack` uses for a row of ``length`` codes: ``ceil(length·bits/8)``.

    Example:
        >>> packed_size(128, 3)
        48
    """
    _check_bits(bits)
    if length < 0:
        raise FormatError(f"length must be non-negative, got {length}")
    return (length * bits + 7) // 8


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``uint8`` codes ``(..., K)`` into ``uint8`` bytes ``(..., ceil(K·bits/8))``, LSB first per row.

    Every 8 codes become exactly ``bits`` bytes: they are assembled into one 64-bit word (code ``i`` at
    bit ``i·bits``) whose low ``bits`` bytes are written out little-endian.

    Raises:
        FormatError: for non-``uint8`` codes, codes ``>= 2**bits`` or ``bits`` outside 1..8.

    Example:
        >>> pack(torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=torch.uint8), 1)
        tensor([13,  1], dtype=torch.uint8)
    """
    _check_bits(bits)
    _check_codes(codes, bits)
    if bits == 8:
        return codes.clone()
    *lead, k = codes.shape
    if 8 % bits == 0:  # 1, 2, 4 bits: whole codes per byte, plain uint8 arithmetic
        per_byte = 8 // bits
        nbytes = packed_size(k, bits)
        padded = torch.nn.functional.pad(codes, (0, nbytes * per_byte - k)) if k % per_byte else codes
        slots = padded.reshape(*lead, nbytes, per_byte)
        out = slots[..., 0].clone()
        for i in range(1, per_byte):
            out |= slots[..., i] << (i * bits)
        return out
    groups = (k + 7) // 8
    padded = torch.nn.functional.pad(codes, (0, groups * 8 - k)) if k % 8 else codes
    octets = padded.reshape(*lead, groups, 8).long()
    shifts = torch.arange(8, device=codes.device, dtype=torch.long) * bits
    words = (octets << shifts).sum(dim=-1, keepdim=True)  # disjoint bit ranges: sum == bitwise or
    byte_shifts = torch.arange(bits, device=codes.device, dtype=torch.long) * 8
    out = ((words >> byte_shifts) & 0xFF).to(torch.uint8).reshape(*lead, groups * bits)
    return out[..., : packed_size(k, bits)].contiguous()


def unpack(packed: torch.Tensor, bits: int, length: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``uint8`` bytes ``(..., ceil(length·bits/8))`` → codes ``(..., length)``.

    Raises:
        FormatError: for non-``uint8`` input or a last axis that does not match ``length``.

    Example:
        >>> unpack(torch.tensor([13, 1], dtype=torch.uint8), 1, 9)
        tensor([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=torch.uint8)
    """
    _check_bits(bits)
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() == 0:
        raise FormatError("packed data must be a torch.uint8 tensor with at least one dimension")
    expected = packed_size(length, bits)
    if packed.shape[-1] != expected:
        raise FormatError(
            f"{length} codes of {bits} bits pack into {expected} bytes per row, but the last axis has "
            f"{packed.shape[-1]}; check the bit width and the logical length"
        )
    if bits == 8:
        return packed.clone()
    *lead, _ = packed.shape
    if 8 % bits == 0:
        shifts = torch.arange(0, 8, bits, device=packed.device, dtype=torch.uint8)
        codes = (packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
        return codes.reshape(*lead, expected * (8 // bits))[..., :length].contiguous()
    groups = (length + 7) // 8
    padded = torch.nn.functional.pad(packed, (0, groups * bits - expected))
    octets = padded.reshape(*lead, groups, bits).long()
    byte_shifts = torch.arange(bits, device=packed.device, dtype=torch.long) * 8
    words = (octets << byte_shifts).sum(dim=-1, keepdim=True)
    shifts = torch.arange(8, device=packed.device, dtype=torch.long) * bits
    codes = ((words >> shifts) & ((1 << bits) - 1)).to(torch.uint8).reshape(*lead, groups * 8)
    return codes[..., :length].contiguous()


def _bytes_to_int32(data: torch.Tensor) -> torch.Tensor:
    """Little-endian groups of 4 bytes (last axis) → int32 words, independent of the host byte order."""
    quads = data.reshape(*data.shape[:-1], data.shape[-1] // 4, 4).long()
    words = (quads << torch.tensor([0, 8, 16, 24], device=data.device)).sum(dim=-1)
    return torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)


def _int32_to_bytes(words: torch.Tensor) -> torch.Tensor:
    w = words.long() & 0xFFFFFFFF
    quads = (w.unsqueeze(-1) >> torch.tensor([0, 8, 16, 24], device=words.device)) & 0xFF
    return quads.to(torch.uint8).reshape(*words.shape[:-1], words.shape[-1] * 4)


def pack_int32(codes: torch.Tensor, bits: int, dim: int = -1) -> torch.Tensor:
    """Pack codes along ``dim`` into int32 words: a LSB-first bit stream, ``32/bits`` codes per word.

    The size of ``dim`` times ``bits`` must be a multiple of 32. This is GPTQ's layout for ``qweight``
    (``dim=0``) and ``qzeros`` (``dim=-1``).

    Example:
        >>> hex(int(pack_int32(torch.arange(8, dtype=torch.uint8), 4)))
        '0x76543210'
    """
    _check_bits(bits)
    _check_codes(codes, bits)
    moved = codes.movedim(dim, -1)
    n = moved.shape[-1]
    if (n * bits) % 32:
        raise FormatError(
            f"{n} codes of {bits} bits do not fill whole int32 words along dim {dim}; "
            f"the axis length must be a multiple of {32 // _gcd(bits, 32)}"
        )
    return _bytes_to_int32(pack(moved.contiguous(), bits)).movedim(-1, dim).contiguous()


def unpack_int32(words: torch.Tensor, bits: int, length: int, dim: int = -1) -> torch.Tensor:
    """Inverse of :func:`pack_int32`: int32 words along ``dim`` → ``length`` ``uint8`` codes."""
    _check_bits(bits)
    if not isinstance(words, torch.Tensor) or words.dtype != torch.int32:
        raise FormatError("packed words must be a torch.int32 tensor (GPTQ/AWQ qweight or qzeros)")
    moved = words.movedim(dim, -1)
    if moved.shape[-1] * 32 != length * bits:
        raise FormatError(
            f"{length} codes of {bits} bits need {length * bits // 32} int32 words along dim {dim}, "
            f"got {moved.shape[-1]}; check bits and the feature count"
        )
    return unpack(_int32_to_bytes(moved.contiguous()), bits, length).movedim(-1, dim).contiguous()


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def pack_gptq(q: torch.Tensor, bits: int) -> torch.Tensor:
    """GPTQ ``qweight``: codes ``q`` of shape ``(in_features, out_features)`` → int32 ``[in·bits/32, out]``.

    Codes are unsigned (``0..2**bits-1``; GPTQ stores ``w/scale + zero``) and run along the input axis,
    LSB first. Transpose a polyquant ``(out, in)`` weight's codes first.

    Example:
        >>> q = torch.arange(8, dtype=torch.uint8).reshape(8, 1)
        >>> hex(int(pack_gptq(q, 4)[0, 0]))
        '0x76543210'
    """
    if q.dim() != 2:
        raise FormatError(f"pack_gptq expects codes of shape (in_features, out_features), got {tuple(q.shape)}")
    return pack_int32(q, bits, dim=0)


def unpack_gptq(qweight: torch.Tensor, bits: int, in_features: int) -> torch.Tensor:
    """Inverse of :func:`pack_gptq`: int32 ``[in·bits/32, out]`` → ``uint8`` codes ``(in_features, out)``."""
    if qweight.dim() != 2:
        raise FormatError(f"GPTQ qweight must be 2-D [in*bits/32, out], got shape {tuple(qweight.shape)}")
    return unpack_int32(qweight, bits, in_features, dim=0)


def _check_awq_bits(bits: int) -> None:
    if bits != 4:
        raise FormatError(f"AWQ's GEMM layout is defined for 4-bit codes only, got bits={bits}; use GPTQ packing")


def pack_awq(q: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """AutoAWQ GEMM ``qweight``: codes ``(in_features, out_features)`` → int32 ``[in, out/8]``.

    Within each int32, nibble ``i`` (from the least significant) holds output column
    ``8·j + AWQ_ORDER[i]``.

    Example:
        >>> hex(int(pack_awq(torch.arange(8, dtype=torch.uint8).reshape(1, 8))[0, 0]))
        '0x75316420'
    """
    _check_awq_bits(bits)
    if q.dim() != 2 or q.shape[1] % 8:
        raise FormatError(
            f"pack_awq expects codes (in_features, out_features) with out_features a multiple of 8, "
            f"got {tuple(q.shape)}"
        )
    order = torch.tensor(AWQ_ORDER, device=q.device)
    interleaved = q.reshape(q.shape[0], -1, 8)[..., order].reshape(q.shape)
    return pack_int32(interleaved, bits, dim=1)


def unpack_awq(qweight: torch.Tensor, bits: int, out_features: int) -> torch.Tensor:
    """Inverse of :func:`pack_awq`: int32 ``[in, out/8]`` → ``uint8`` codes ``(in_features, out_features)``."""
    _check_awq_bits(bits)
    if qweight.dim() != 2:
        raise FormatError(f"AWQ qweight must be 2-D [in, out/8], got shape {tuple(qweight.shape)}")
    interleaved = unpack_int32(qweight, bits, out_features, dim=1)
    inverse = torch.argsort(torch.tensor(AWQ_ORDER, device=qweight.device))
    return interleaved.reshape(qweight.shape[0], -1, 8)[..., inverse].reshape(interleaved.shape)


def swap_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Exchange the two nibbles of every byte: converts low-first 4-bit packing to high-first and back."""
    if packed.dtype != torch.uint8:
        raise FormatError(f"swap_nibbles expects torch.uint8 bytes, got {packed.dtype}")
    return (packed << 4) | (packed >> 4)


def pack_nibbles_high_first(codes: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes ``(..., K)`` bitsandbytes-style into ``(..., ceil(K/2))`` bytes, first code high.

    Example:
        >>> pack_nibbles_high_first(torch.tensor([1, 2, 3], dtype=torch.uint8))
        tensor([18, 48], dtype=torch.uint8)
    """
    return swap_nibbles(pack(codes, 4))


def unpack_nibbles_high_first(packed: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles_high_first`."""
    return unpack(swap_nibbles(packed), 4, length)
