"""Bit packing: dense LSB-first rows, GPTQ/AWQ int32 layouts, bitsandbytes nibble order."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from polyquant.errors import FormatError
from polyquant.packing import (
    AWQ_ORDER,
    pack,
    pack_awq,
    pack_gptq,
    pack_int32,
    pack_nibbles_high_first,
    packed_size,
    swap_nibbles,
    unpack,
    unpack_awq,
    unpack_gptq,
    unpack_int32,
    unpack_nibbles_high_first,
)


def random_codes(shape: tuple[int, ...], bits: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1 << bits, shape, generator=gen, dtype=torch.uint8)


def reference_bitstream(codes: list[int], bits: int) -> list[int]:
    """Bytes of an LSB-first bit stream, built one bit at a time."""
    stream = [(c >> i) & 1 for c in codes for i in range(bits)]
    stream += [0] * (-len(stream) % 8)
    return [sum(stream[j + i] << i for i in range(8)) for j in range(0, len(stream), 8)]


@settings(max_examples=80, deadline=None)
@given(
    bits=st.integers(1, 8),
    lead=st.lists(st.integers(1, 3), max_size=2),
    length=st.integers(0, 70),
    seed=st.integers(0, 2**16),
)
def test_pack_unpack_round_trip(bits: int, lead: list[int], length: int, seed: int) -> None:
    codes = random_codes((*lead, length), bits, seed)
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (*lead, packed_size(length, bits))
    assert torch.equal(unpack(packed, bits, length), codes)


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_is_an_lsb_first_bit_stream(bits: int) -> None:
    codes = random_codes((3, 21), bits, seed=bits)
    packed = pack(codes, bits)
    for row in range(3):
        assert packed[row].tolist() == reference_bitstream(codes[row].tolist(), bits)


def test_layout_constants() -> None:
    assert pack(torch.tensor([1, 2, 3], dtype=torch.uint8), 4).tolist() == [0x21, 0x03]  # even element low
    assert pack(torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=torch.uint8), 1).tolist() == [0b1101, 1]
    # 3-bit codes straddle bytes: 0b111 at index 2 occupies bits 6..8
    assert pack(torch.tensor([0, 0, 7], dtype=torch.uint8), 3).tolist() == [0b11000000, 0b1]
    assert [packed_size(n, b) for n, b in ((128, 3), (7, 5), (0, 4), (9, 1))] == [48, 5, 0, 2]


def test_gptq_and_awq_constants() -> None:
    values = torch.arange(8, dtype=torch.uint8)
    assert int(pack_gptq(values.reshape(8, 1), 4)[0, 0]) == 0x76543210
    assert int(pack_awq(values.reshape(1, 8), 4)[0, 0]) == 0x75316420
    assert AWQ_ORDER == (0, 2, 4, 6, 1, 3, 5, 7)
    assert int(pack_int32(torch.tensor([0, 1, 2, 3] * 4, dtype=torch.uint8), 2)) == int.from_bytes(
        bytes([0xE4] * 4), "little", signed=True
    )
    # codes with the top bit set give negative int32 words, as GPTQ/AWQ checkpoints store them
    assert int(pack_gptq(torch.full((8, 1), 15, dtype=torch.uint8), 4)[0, 0]) == -1


def test_gptq_three_bit_words_straddle() -> None:
    codes = random_codes((32, 5), 3, seed=4)
    qweight = pack_gptq(codes, 3)
    assert qweight.shape == (3, 5) and qweight.dtype == torch.int32
    for col in range(5):
        stream = reference_bitstream(codes[:, col].tolist(), 3)
        words = [int.from_bytes(bytes(stream[i : i + 4]), "little", signed=True) for i in range(0, 12, 4)]
        assert qweight[:, col].tolist() == words
    assert torch.equal(unpack_gptq(qweight, 3, 32), codes)


@settings(max_examples=30, deadline=None)
@given(bits=st.sampled_from([2, 3, 4, 8]), rows=st.integers(1, 3), cols=st.integers(1, 4), seed=st.integers(0, 999))
def test_gptq_round_trip(bits: int, rows: int, cols: int, seed: int) -> None:
    in_features = rows * 32
    codes = random_codes((in_features, cols), bits, seed)
    qweight = pack_gptq(codes, bits)
    assert qweight.shape == (in_features * bits // 32, cols)
    assert torch.equal(unpack_gptq(qweight, bits, in_features), codes)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 5), groups=st.integers(1, 4), seed=st.integers(0, 999))
def test_awq_round_trip(rows: int, groups: int, seed: int) -> None:
    codes = random_codes((rows, groups * 8), 4, seed)
    qweight = pack_awq(codes)
    assert qweight.shape == (rows, groups) and qweight.dtype == torch.int32
    assert torch.equal(unpack_awq(qweight, 4, groups * 8), codes)


def test_pack_int32_along_any_axis() -> None:
    codes = random_codes((2, 16, 3), 4, seed=6)
    words = pack_int32(codes, 4, dim=1)
    assert words.shape == (2, 2, 3)
    assert torch.equal(unpack_int32(words, 4, 16, dim=1), codes)


def test_bitsandbytes_nibble_order() -> None:
    codes = torch.tensor([1, 2, 3], dtype=torch.uint8)
    packed = pack_nibbles_high_first(codes)
    assert packed.tolist() == [0x12, 0x30]
    assert torch.equal(unpack_nibbles_high_first(packed, 3), codes)
    many = random_codes((4, 33), 4, seed=7)
    assert torch.equal(unpack_nibbles_high_first(pack_nibbles_high_first(many), 33), many)
    assert torch.equal(swap_nibbles(swap_nibbles(pack(many, 4))), pack(many, 4))


def test_packing_errors_are_clear() -> None:
    with pytest.raises(FormatError, match="does not fit in 3 bits"):
        pack(torch.tensor([8], dtype=torch.uint8), 3)
    with pytest.raises(FormatError, match="uint8"):
        pack(torch.tensor([1], dtype=torch.int64), 4)
    for bad in (0, 9, True):
        with pytest.raises(FormatError, match=r"1..8"):
            pack(torch.tensor([1], dtype=torch.uint8), bad)
    with pytest.raises(FormatError, match="at least one dimension"):
        pack(torch.tensor(1, dtype=torch.uint8), 4)
    with pytest.raises(FormatError, match="pack into 2 bytes"):
        unpack(torch.zeros(3, dtype=torch.uint8), 4, 4)
    with pytest.raises(FormatError, match="multiple of 8"):
        pack_gptq(torch.zeros(12, 4, dtype=torch.uint8), 4)
    with pytest.raises(FormatError, match="4-bit codes only"):
        pack_awq(torch.zeros(8, 8, dtype=torch.uint8), 3)
    with pytest.raises(FormatError, match="multiple of 8"):
        pack_awq(torch.zeros(8, 12, dtype=torch.uint8))
    with pytest.raises(FormatError, match="int32"):
        unpack_gptq(torch.zeros(1, 4, dtype=torch.int64), 4, 8)
    with pytest.raises(FormatError, match="need 1 int32 words"):
        unpack_gptq(torch.zeros(2, 4, dtype=torch.int32), 4, 8)
    with pytest.raises(FormatError, match="non-negative"):
        packed_size(-1, 4)
