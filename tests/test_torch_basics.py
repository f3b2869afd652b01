"""Small torch helpers shared by several modules."""

from __future__ import annotations

import pytest
from torch import nn

from minilearn.torch_basics import kept_modes


def test_kept_modes_puts_back_every_module_mode_even_after_an_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout())
    model.train()
    model[1].eval()  # a frozen BatchNorm stays in eval, as fastai's BnFreeze leaves it
    with kept_modes(model):
        model.eval()
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == [True, True, False, True]
    with pytest.raises(RuntimeError, match="boom"), kept_modes(model):
        model.eval()
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == [True, True, False, True]
