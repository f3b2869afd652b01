"""Layers fastai users build models from: `ConvLayer` (convolution, normalisation, activation).

Only what the Learner stack's users reach for; torch.nn has the rest.
"""

from __future__ import annotations

from torch import nn

from minilearn.checks import check_bool, check_int

__all__ = ["ConvLayer"]

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSES = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCH_NORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class ConvLayer(nn.Sequential):
    """fastai's `ConvLayer`: a convolution, then BatchNorm and an activation (by default ReLU).

    `ks` and `stride` are the convolution's; `padding` defaults to `ks // 2`, so a stride of 1
    keeps the size (as fastai). The convolution has no bias when BatchNorm follows it (the norm's
    own shift does that job), unless `bias` says otherwise. `norm=False` leaves the norm out,
    `bn_1st=False` puts the activation before it, `act_cls=None` leaves the activation out,
    `transpose=True` makes it a transposed convolution, `ndim` 1, 2 or 3. The convolution's
    weights are Kaiming-initialised for the ReLU (fastai's `init='auto'`), its bias set to 0.
    Other keyword arguments go to the convolution (`dilation`, `groups`, ...).
    """

    def __init__(self, ni: int, nf: int, ks: int = 3, stride: int = 1, padding: int | None = None,
                 bias: bool | None = None, ndim: int = 2, norm: bool = True, bn_1st: bool = True,
                 act_cls=nn.ReLU, transpose: bool = False, **kwargs):
        ni, nf = check_int("ni", ni, low=1), check_int("nf", nf, low=1)
        ks, stride = check_int("ks", ks, low=1), check_int("stride", stride, low=1)
        if ndim not in _CONVS:
            raise ValueError(f"ndim: expected 1, 2 or 3 spatial dimensions, got {ndim!r}")
        norm, bn_1st, transpose = check_bool("norm", norm), check_bool("bn_1st", bn_1st), check_bool("transpose", transpose)
        padding = ks // 2 if padding is None else check_int("padding", padding, low=0)
        bias = (not norm) if bias is None else check_bool("bias", bias)
        conv_cls = (_CONV_TRANSPOSES if transpose else _CONVS)[ndim]
        conv = conv_cls(ni, nf, kernel_size=ks, stride=stride, padding=padding, bias=bias, **kwargs)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu" if act_cls is nn.ReLU else "leaky_relu")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        layers = [conv]
        act = [act_cls()] if act_cls is not None else []
        norm_layer = [_BATCH_NORMS[ndim](nf)] if norm else []
        layers += norm_layer + act if bn_1st else act + norm_layer
        super().__init__(*layers)
