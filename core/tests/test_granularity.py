"""Granularity: scale shapes and the divisibility errors users see."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyquant.activations import ActivationSpec
from polyquant.errors import FormatError, RecipeError
from polyquant.formats.granularity import Granularity


@pytest.mark.parametrize(
    ("granularity", "shape", "expected"),
    [
        (Granularity.per_tensor(), (64, 32), ()),
        (Granularity.per_channel(), (64, 32), (64, 1)),
        (Granularity.per_channel(axis=1), (64, 32), (1, 32)),
        (Granularity.per_channel(axis=-1), (2, 64, 32), (1, 1, 32)),
        (Granularity.per_group(16), (64, 32), (64, 2)),
        (Granularity.per_group(16), (3, 64, 32), (3, 64, 2)),
        (Granularity.per_block(32, 16), (64, 32), (2, 2)),
    ],
)
def test_scale_shapes(granularity: Granularity, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    assert granularity.scale_shape(shape) == expected


def test_group_not_dividing_names_shape_and_fix() -> None:
    with pytest.raises(FormatError) as excinfo:
        Granularity.per_group(128).scale_shape((4096, 100))
    message = str(excinfo.value)
    assert "(4096, 100)" in message and "group size 128" in message and "choose a group size" in message


def test_block_not_dividing() -> None:
    with pytest.raises(FormatError, match="not divisible by block 16x16"):
        Granularity.per_block(16, 16).validate((30, 32))


def test_invalid_constructions() -> None:
    with pytest.raises(FormatError):
        Granularity.per_group(0)
    with pytest.raises(FormatError):
        Granularity.per_block(0, 4)
    with pytest.raises(FormatError, match="out of range"):
        Granularity.per_channel(axis=3).validate((4, 4))


@given(st.sampled_from(["tensor", "channel", "group", "block"]), st.integers(1, 64), st.integers(1, 8))
def test_dict_round_trip(kind: str, size: int, axis: int) -> None:
    g = {
        "tensor": Granularity.per_tensor(),
        "channel": Granularity.per_channel(axis),
        "group": Granularity.per_group(size),
        "block": Granularity.per_block(size, axis),
    }[kind]
    assert Granularity.from_dict(g.to_dict()) == g
    assert str(g)


def test_activation_spec_validation() -> None:
    assert ActivationSpec().name == "int8-token-dyn"
    with pytest.raises(RecipeError, match=r"activations.format: 'int3'.*allowed: int8"):
        ActivationSpec(format="int3")
    with pytest.raises(RecipeError, match="static"):
        ActivationSpec(dynamic=False, granularity="token")
    with pytest.raises(RecipeError, match="integer format"):
        ActivationSpec(format="fp8_e4m3", symmetric=False)
    with pytest.raises(RecipeError, match="unknown field"):
        ActivationSpec.from_dict({"fromat": "int8"})
    spec = ActivationSpec(format="fp8_e4m3", granularity="tensor", dynamic=False)
    assert ActivationSpec.from_dict(spec.to_dict()) == spec
