"""Small helpers over torch that several modules share (fastai keeps its own in `torch_core`)."""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


@contextlib.contextmanager
def kept_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model may switch between train and eval mode; on leaving, error or
    not, every module is back in the mode it had (a frozen BatchNorm in eval stays in eval)."""
    modes = [m.training for m in model.modules()]
    try:
        yield model
    finally:
        for m, mode in zip(model.modules(), modes):
            m.training = mode
