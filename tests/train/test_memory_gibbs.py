"""The memory check before a gibbs fit: the sampler keeps no gradients and no mini-batches, so 25M ratings at
its default rank must be allowed on a machine with a few GB free, and an absurd rank still refused."""

from __future__ import annotations

import pytest
import torch

from xlcf.train import TrainConfig
from xlcf.train.memory import check_memory, estimate_bytes

ML25M = (162_541, 59_047)


def test_25m_ratings_at_the_default_rank_are_estimated_under_4_gb_and_allowed():
    need = estimate_bytes(*ML25M, 25_000_000, 32, batch_size=25_000_000, optimizer="gibbs")
    assert 1e9 < need < 4e9  # measured: about 90 bytes per rating plus the rows
    small = estimate_bytes(*ML25M, 5_000_000, 32, batch_size=5_000_000, optimizer="gibbs")
    assert small < need < 6 * small  # grows with the ratings, not with a batch of all of them
    cfg = TrainConfig(optimizer="gibbs", factors=32, epochs=2, burn_in=1, valid_pct=0)
    check_memory(*ML25M, 25_000_000, cfg, torch.device("cpu"), available=8 << 30)  # no error


def test_an_absurd_rank_is_still_refused_with_the_rank_that_fits():
    cfg = TrainConfig(optimizer="gibbs", factors=20_000, epochs=2, burn_in=1, valid_pct=0)
    with pytest.raises(Exception, match=r"with gibbs, but cpu has .* at most about [\d,]+ factors fit") as info:
        check_memory(*ML25M, 25_000_000, cfg, torch.device("cpu"), available=8 << 30)
    assert info.value.field == "factors"
