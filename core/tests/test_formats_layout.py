"""GroupLayout (scale groups as reduction axes) and the flat-block granularity."""

from __future__ import annotations

import pytest
import torch

from polyquant.errors import FormatError
from polyquant.formats import Granularity
from polyquant.formats.layout import GroupLayout

GRANULARITIES = [
    (Granularity.per_tensor(), (4, 6, 8)),
    (Granularity.per_channel(0), (4, 6, 8)),
    (Granularity.per_channel(1), (4, 6, 8)),
    (Granularity.per_channel(-1), (4, 6, 8)),
    (Granularity.per_group(4), (4, 6, 8)),
    (Granularity.per_block(3, 4), (2, 6, 8)),
    (Granularity.per_flat_block(16), (4, 6, 8)),
]


@pytest.mark.parametrize(("gran", "shape"), GRANULARITIES, ids=[str(g) for g, _ in GRANULARITIES])
def test_layout_groups_match_a_direct_computation(gran: Granularity, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    layout = GroupLayout.of(gran, shape)
    assert layout.scale_shape == gran.scale_shape(shape)
    amax = layout.reduce(x, "absmax")
    # every element's group maximum, via the broadcast view, bounds the element and is attained in the group
    full = layout.broadcastable(amax).expand(layout.view_shape).reshape(shape)
    assert bool((x.abs() <= full).all())
    rows = layout.rows(x)
    assert rows.shape == (layout.num_groups, layout.group_numel)
    assert torch.equal(rows.abs().amax(dim=1), amax.flatten())  # row order = scale order
    assert torch.equal(layout.from_rows(rows), x)
    assert torch.equal(layout.reduce(x, "amin"), -layout.reduce(-x, "amax"))
    torch.testing.assert_close(layout.reduce(x, "absmean").flatten(), rows.abs().mean(dim=1))


def test_flat_blocks() -> None:
    gran = Granularity.per_flat_block(4096)
    assert gran.scale_shape((768, 768)) == (144,)
    assert str(gran) == "per-flat-block(4096)"
    assert Granularity.from_dict(gran.to_dict()) == gran
    with pytest.raises(FormatError, match="not a multiple of the block size 4096"):
        gran.scale_shape((3, 100))
    with pytest.raises(FormatError, match="positive"):
        Granularity.per_flat_block(0)
    # equal to per-group blocks whenever the block divides the last axis
    x = torch.randn(4, 128)
    flat = GroupLayout.of(Granularity.per_flat_block(64), x.shape).reduce(x, "absmax")
    group = GroupLayout.of(Granularity.per_group(64), x.shape).reduce(x, "absmax")
    assert torch.equal(flat, group.flatten())
