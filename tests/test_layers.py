"""ConvLayer: fastai's convolution block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minilearn import ConvLayer


def test_conv_layer_is_conv_batchnorm_relu_keeping_the_size():
    layer = ConvLayer(3, 16)
    assert [type(m) for m in layer] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    conv = layer[0]
    assert conv.bias is None and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
    assert layer(torch.randn(2, 3, 8, 8)).shape == (2, 16, 8, 8)
    assert ConvLayer(16, 32, stride=2)(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)
    std = conv.weight.std().item()
    assert abs(std - (2 / (3 * 9)) ** 0.5) < 0.05  # Kaiming for ReLU: sqrt(2 / fan_in)


def test_conv_layer_options():
    plain = ConvLayer(3, 4, ks=5, norm=False, act_cls=None)
    assert [type(m) for m in plain] == [nn.Conv2d] and plain[0].bias is not None and plain[0].padding == (2, 2)
    assert [type(m) for m in ConvLayer(3, 4, bn_1st=False)] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]
    assert [type(m) for m in ConvLayer(3, 4, ndim=1)] == [nn.Conv1d, nn.BatchNorm1d, nn.ReLU]
    assert isinstance(ConvLayer(3, 4, transpose=True)[0], nn.ConvTranspose2d)
    assert ConvLayer(3, 4, bias=True)[0].bias is not None
    assert isinstance(ConvLayer(3, 4, act_cls=nn.LeakyReLU)[2], nn.LeakyReLU)
    for kwargs, arg in [(dict(ndim=4), "ndim"), (dict(ks=0), "ks"), (dict(norm="yes"), "norm")]:
        with pytest.raises((TypeError, ValueError), match=arg):
            ConvLayer(3, 4, **kwargs)


def test_same_shapes_and_parameters_as_fastai(fastai):
    import fastai.layers as fastai_layers

    for kwargs in [dict(), dict(stride=2), dict(ks=5, bn_1st=False), dict(ndim=1)]:
        ours, theirs = ConvLayer(3, 8, **kwargs), fastai_layers.ConvLayer(3, 8, **kwargs)
        assert [type(m) for m in ours] == [type(m) for m in theirs]
        assert [p.shape for p in ours.parameters()] == [p.shape for p in theirs.parameters()]
