"""Layers with hand-written backward passes, and the callback that trains them through a Learner.

The tutorials minilearn grew from end with a network whose gradients are derived by hand. This
module is that kit, over torch tensors and without autograd:

    model = scratch.Sequential(scratch.Linear(784, 32), scratch.ReLU(), scratch.Linear(32, 10), scratch.Softmax())
    learn = Learner(dls, model, scratch.CrossEntropy(), opt_func=SGD, metrics=accuracy, cbs=ScratchBackward())

Every layer is an `nn.Module` with `forward(x)` and `backward(grad_out) -> grad_in`; `forward`
keeps what `backward` needs, and `backward` adds each parameter's gradient to its `.grad`, as
`loss.backward()` does. Losses (`MSE`, `CrossEntropy`) are called as `loss(pred, targ)` and have
`backward() -> dloss/dpred`. `backprop(model, loss)` runs the whole backward pass.

Design choices:
- Parameters are ordinary `nn.Parameter`s (`requires_grad=True`), and every forward runs under
  `torch.no_grad()`. So autograd records nothing, yet the Learner, its optimisers, `splitter`,
  `freeze`/`unfreeze`, `state_dict` and checkpoints see parameters exactly as they see an
  `nn.Module`'s: `requires_grad` keeps its usual meaning ("this one trains"), and a frozen
  parameter gets no gradient here either. Parameters with `requires_grad=False` would need a
  custom `splitter` and would break `freeze_to`, which flips that flag.
- `Sequential` names its layers "0", "1", ... as `nn.Sequential` does, and `Linear` stores
  `weight` (out, in) and `bias` as `nn.Linear`, initialised the same way: state dicts load
  both ways between a scratch net and the equivalent torch net.
- A layer keeps its inputs for `backward` only in training mode (`model.train()`), and `backward`
  frees them, as autograd frees its graph: validation and inference hold no activations, and a
  second `backward` without a new forward is an error rather than a silent repeat.
- `Softmax` followed by `CrossEntropy` is backpropagated in one step, `(p - t) / N` with respect
  to the logits, which never divides by a probability: the gradient stays exact when a
  probability underflows to zero. The loss value clamps probabilities at the dtype's smallest
  normal number, so it is at most about 87 per item in float32 (708 in float64), never inf.

A Learner trains a scratch model with `cbs=ScratchBackward()`; without it, the Learner's own
`loss.backward()` fails, since the scratch loss has no autograd graph.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from minilearn.callback import Callback, CancelBackwardException
from minilearn.checks import check_bool, check_int, check_number

__all__ = [
    "Layer", "Linear", "Identity", "LinearActivation", "Sigmoid", "Tanh", "BinaryStep", "ReLU", "LeakyReLU",
    "Softmax", "Sequential", "Loss", "MSE", "CrossEntropy", "backprop", "ScratchBackward",
]


def _add_grad(p: Tensor, grad: Tensor) -> None:
    """Add `grad` to `p.grad` as autograd does (so gradient accumulation works); frozen `p` gets none."""
    if not p.requires_grad:
        return
    if p.grad is None:
        p.grad = grad
    else:
        p.grad += grad


# ---------------------------------------------------------------------------------------- layers
class Layer(nn.Module):
    """Base of the scratch layers: `forward(x)` without autograd, `backward(grad_out) -> grad_in` by hand."""

    def __call__(self, *args, **kwargs):
        # autograd must record nothing: the gradients come from `backward`, written below
        with torch.no_grad():
            return super().__call__(*args, **kwargs)

    def backward(self, grad: Tensor) -> Tensor:
        """Given d(loss)/d(output), add the parameters' gradients to `.grad`; return d(loss)/d(input)."""
        raise NotImplementedError

    def _keep(self, **tensors: Tensor) -> None:
        """Keep what `backward` needs, in training mode only (inference keeps nothing)."""
        self._saved = tensors if self.training else None

    def _take(self) -> dict[str, Tensor]:
        """What `forward` kept, freed as it is taken: one backward per forward, as autograd."""
        saved = getattr(self, "_saved", None)
        if saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward: no forward to go back through; call the layer "
                               "in training mode (layer.train()) before each backward")
        self._saved = None
        return saved

    def clear(self) -> None:
        """Drop what the last forward kept (ScratchBackward calls this after a fit)."""
        for m in self.modules():
            m._saved = None


class Linear(Layer):
    """`x @ weight.T + bias`, stored and initialised as `nn.Linear` (same seed, same weights)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = check_int("in_features", in_features, low=1)
        self.out_features = check_int("out_features", out_features, low=1)
        check_bool("bias", bias)
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's init: U(-1/sqrt(in), 1/sqrt(in)) for both, drawn in the same order, so seeds agree."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x: expected a batch of shape (N, {self.in_features}), got {tuple(x.shape)}")
        self._keep(x=x)
        out = x @ self.weight.T
        return out + self.bias if self.bias is not None else out

    def backward(self, grad: Tensor) -> Tensor:
        x = self._take()["x"]
        # out[n, j] = sum_i x[n, i] w[j, i] + b[j]
        if self.weight.requires_grad:
            _add_grad(self.weight, grad.T @ x)
        if self.bias is not None and self.bias.requires_grad:
            _add_grad(self.bias, grad.sum(0))
        return grad @ self.weight

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Identity(Layer):
    """f(x) = x."""

    def forward(self, x: Tensor) -> Tensor:
        self._keep()
        return x

    def backward(self, grad: Tensor) -> Tensor:
        self._take()
        return grad


class LinearActivation(Layer):
    """f(x) = a x: the tutorials' `Linear(a)` activation (renamed: `Linear` is the layer with weights)."""

    def __init__(self, a: float = 1.0):
        super().__init__()
        self.a = check_number("a", a)

    def forward(self, x: Tensor) -> Tensor:
        self._keep()
        return self.a * x

    def backward(self, grad: Tensor) -> Tensor:
        self._take()
        return self.a * grad

    def extra_repr(self) -> str:
        return f"a={self.a}"


class Sigmoid(Layer):
    """f(x) = 1 / (1 + exp(-x)); f' = f (1 - f), computed from the output it keeps."""

    def forward(self, x: Tensor) -> Tensor:
        # exp(-x) overflows to inf for very negative x, and 1 / (1 + inf) is exactly 0: no NaN
        y = 1 / (1 + torch.exp(-x))
        self._keep(y=y)
        return y

    def backward(self, grad: Tensor) -> Tensor:
        y = self._take()["y"]
        return grad * y * (1 - y)


class Tanh(Layer):
    """f(x) = tanh(x); f' = 1 - f², computed from the output it keeps."""

    def forward(self, x: Tensor) -> Tensor:
        # torch.tanh rather than (e^x - e^-x) / (e^x + e^-x), which is inf / inf for |x| > 89
        y = torch.tanh(x)
        self._keep(y=y)
        return y

    def backward(self, grad: Tensor) -> Tensor:
        y = self._take()["y"]
        return grad * (1 - y * y)


class BinaryStep(Layer):
    """f(x) = 1 where x > thresh, else 0. Its derivative is zero wherever it exists (and undefined at
    `thresh`), so `backward` returns zeros: nothing before it can learn by gradient descent. It is
    here for the activation zoo, not for training."""

    def __init__(self, thresh: float = 0.0):
        super().__init__()
        self.thresh = check_number("thresh", thresh)

    def forward(self, x: Tensor) -> Tensor:
        self._keep()
        return (x > self.thresh).to(x.dtype)

    def backward(self, grad: Tensor) -> Tensor:
        self._take()
        return torch.zeros_like(grad)

    def extra_repr(self) -> str:
        return f"thresh={self.thresh}"


class ReLU(Layer):
    """f(x) = max(x, 0); f' = 1 where x > 0, else 0 (0 at x = 0, as torch)."""

    def forward(self, x: Tensor) -> Tensor:
        self._keep(positive=x > 0)
        return x.clamp_min(0)

    def backward(self, grad: Tensor) -> Tensor:
        return grad * self._take()["positive"]


class LeakyReLU(Layer):
    """f(x) = b x where x > 0, a x elsewhere: `a` is the slope for x <= 0, `b` the slope for x > 0.

    `LeakyReLU(0.01)` is the usual leaky ReLU (torch's `LeakyReLU(0.01)`); `LeakyReLU(0, 1)` is ReLU.
    """

    def __init__(self, a: float = 0.01, b: float = 1.0):
        super().__init__()
        self.a, self.b = check_number("a", a), check_number("b", b)

    def forward(self, x: Tensor) -> Tensor:
        positive = x > 0
        self._keep(positive=positive)
        return torch.where(positive, self.b * x, self.a * x)

    def backward(self, grad: Tensor) -> Tensor:
        positive = self._take()["positive"]
        return torch.where(positive, self.b * grad, self.a * grad)

    def extra_repr(self) -> str:
        return f"a={self.a}, b={self.b}"


class Softmax(Layer):
    """Softmax over each row (the last dimension), shifted by the row's max so exp never overflows.

    Backward is the Jacobian-vector product `y * (g - sum(g * y))`; before `CrossEntropy`,
    `backprop` skips it and uses the fused, exact `(y - t) / N` instead.
    """

    def forward(self, x: Tensor) -> Tensor:
        e = torch.exp(x - x.amax(dim=-1, keepdim=True))
        y = e / e.sum(dim=-1, keepdim=True)
        self._keep(y=y)
        return y

    def backward(self, grad: Tensor) -> Tensor:
        y = self._take()["y"]
        return y * (grad - (grad * y).sum(dim=-1, keepdim=True))


class Sequential(Layer):
    """Scratch layers applied in order; backward goes through them in reverse.

    Layers are registered as "0", "1", ... like `nn.Sequential`, so the state dict of the
    equivalent torch net loads into this one and back.
    """

    def __init__(self, *layers: Layer):
        super().__init__()
        if not layers:
            raise ValueError("layers: expected at least one scratch layer, got none")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers: expected scratch layers (with a hand-written backward), got "
                                f"{type(layer).__module__}.{type(layer).__name__} at position {i}")
            self.add_module(str(i), layer)

    @property
    def layers(self) -> list[Layer]:
        """The layers, in order."""
        return list(self.children())

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self._modules)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.children():
            x = layer(x)
        return x

    def backward(self, grad: Tensor, skip_last: bool = False) -> Tensor:
        """Backward through every layer, last first; `skip_last` starts below the final layer.

        With `skip_last`, `grad` is d(loss)/d(input of the last layer), and the last layer's kept
        forward is freed unused (backprop's fused softmax + cross-entropy step).
        """
        layers = self.layers
        if skip_last:
            last = layers[-1]
            if isinstance(last, Sequential):
                grad = last.backward(grad, skip_last=True)
            else:
                last._take()
            layers = layers[:-1]
        for layer in reversed(layers):
            grad = layer.backward(grad)
        return grad


def _ends_in_softmax(model: Layer) -> bool:
    while isinstance(model, Sequential):
        model = model.layers[-1]
    return isinstance(model, Softmax)


# ---------------------------------------------------------------------------------------- losses
class Loss:
    """Base of the scratch losses: `loss(pred, targ)` gives a 0-d tensor, `backward()` d(loss)/d(pred)."""

    def __call__(self, pred: Tensor, targ: Tensor) -> Tensor:
        raise NotImplementedError

    def backward(self) -> Tensor:
        """d(loss)/d(pred) for the last call."""
        raise NotImplementedError

    def _take(self) -> dict[str, Tensor]:
        saved = getattr(self, "_saved", None)
        if saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward: call the loss on a batch before each backward")
        self._saved = None
        return saved

    def clear(self) -> None:
        """Drop what the last call kept."""
        self._saved = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_pred(pred) -> None:
    if not isinstance(pred, Tensor) or not pred.is_floating_point():
        raise TypeError(f"pred: expected a floating-point tensor, got {type(pred).__name__}"
                        + (f" of dtype {pred.dtype}" if isinstance(pred, Tensor) else ""))


class MSE(Loss):
    """Mean squared error over every element: mean((pred - targ)²); targ is reshaped to pred's shape."""

    def __call__(self, pred: Tensor, targ: Tensor) -> Tensor:
        _check_pred(pred)
        if not isinstance(targ, Tensor) or targ.numel() != pred.numel():
            raise ValueError(f"targ: expected a tensor with as many elements as pred {tuple(pred.shape)}, got "
                             f"{tuple(targ.shape) if isinstance(targ, Tensor) else type(targ).__name__}")
        diff = pred - targ.reshape(pred.shape).to(pred.dtype)
        self._saved = {"diff": diff}
        return (diff * diff).mean()

    def backward(self) -> Tensor:
        diff = self._take()["diff"]
        return 2 * diff / diff.numel()


class CrossEntropy(Loss):
    """Categorical cross-entropy of probabilities `pred` (N, C), as a final `Softmax` gives them.

    `targ` is class indices (int, shape (N,) or (N, 1)) or target distributions (float, (N, C),
    rows summing to 1, e.g. one-hot). Loss: `-sum(t * log p) / N`, with p clamped at the dtype's
    smallest normal number so it is never inf. Alone, `backward()` is `-t / (p N)`; after a
    `Softmax`, `backprop` uses `grad_logits()`, which never divides by p.
    """

    def __call__(self, pred: Tensor, targ: Tensor) -> Tensor:
        _check_pred(pred)
        if pred.dim() != 2:
            raise ValueError(f"pred: expected probabilities of shape (N, C), got {tuple(pred.shape)}")
        t = self._target_distribution(pred, targ)
        p = pred.clamp_min(torch.finfo(pred.dtype).tiny)
        self._saved = {"p": p, "t": t}
        return -(t * torch.log(p)).sum() / len(p)

    @staticmethod
    def _target_distribution(pred: Tensor, targ) -> Tensor:
        """Targets as one row of class probabilities per item (one-hot for class indices)."""
        if not isinstance(targ, Tensor):
            raise TypeError(f"targ: expected a tensor, got {type(targ).__name__}")
        n, n_classes = pred.shape
        if targ.is_floating_point():
            if tuple(targ.shape) != (n, n_classes):
                raise ValueError(f"targ: float targets must be distributions of shape {(n, n_classes)}, "
                                 f"got {tuple(targ.shape)}; pass class indices as an int tensor")
            return targ.to(pred.dtype)
        if targ.dtype == torch.bool or targ.numel() != n or (targ.dim() == 2 and targ.shape[1] != 1) or targ.dim() > 2:
            raise ValueError(f"targ: expected class indices of shape ({n},) or ({n}, 1), got "
                             f"{tuple(targ.shape)} of dtype {targ.dtype}")
        return torch.zeros_like(pred).scatter_(1, targ.reshape(n, 1).long(), 1.0)

    def backward(self) -> Tensor:
        saved = self._take()
        p, t = saved["p"], saved["t"]
        return -t / (p * len(p))

    def grad_logits(self) -> Tensor:
        """d(loss)/d(logits) when `pred` was softmax(logits): `(p * sum(t) - t) / N`, exact even if p underflows."""
        saved = self._take()
        p, t = saved["p"], saved["t"]
        return (p * t.sum(dim=1, keepdim=True) - t) / len(p)


# ---------------------------------------------------------------------------------------- backprop
def backprop(model: Layer, loss: Loss) -> Tensor:
    """The backward pass of the last `loss(model(x), y)`: fills the parameters' `.grad`, returns d(loss)/dx.

    A model ending in `Softmax` with a `CrossEntropy` loss goes back through both in one exact
    step (see `CrossEntropy.grad_logits`).
    """
    if not isinstance(model, Layer):
        raise TypeError(f"model: expected a scratch Layer or Sequential, got {type(model).__name__}")
    if not isinstance(loss, Loss):
        raise TypeError(f"loss: expected a scratch Loss (MSE, CrossEntropy), got {type(loss).__name__}")
    if isinstance(loss, CrossEntropy) and _ends_in_softmax(model):
        grad = loss.grad_logits()
        if isinstance(model, Sequential):
            return model.backward(grad, skip_last=True)
        model._take()  # a lone Softmax: the fused gradient is already d(loss)/d(input)
        return grad
    return model.backward(loss.backward())


class ScratchBackward(Callback):
    """Trains a scratch model in a Learner: replaces autograd's backward with the layers' own.

    At `before_backward` it runs `backprop(model, loss_func)`, which fills each parameter's
    `.grad`, then raises `CancelBackwardException` so the Learner skips `loss.backward()`;
    `after_backward` callbacks (gradient clipping, ...) and the optimiser step run as usual.
    It runs after other `before_backward` callbacks (order 90); one that rescales `loss_grad`
    has no effect here, since the gradient comes from the loss's own `backward`.
    """

    order = 90
    run_valid = False

    def before_fit(self) -> None:
        if not isinstance(self.learn.model, Layer):
            raise TypeError(f"model: ScratchBackward needs a scratch model (minilearn.scratch.Sequential, ...), "
                            f"got {type(self.learn.model).__name__}; an nn.Module trains without it")
        if not isinstance(self.learn.loss_func, Loss):
            raise TypeError(f"loss_func: ScratchBackward needs a scratch loss (MSE, CrossEntropy), "
                            f"got {type(self.learn.loss_func).__name__}")
        # these work by rescaling `loss_grad`, which the hand-written backward never reads
        clash = [type(cb).__name__ for cb in self.learn.cbs if type(cb).__name__ in ("GradientAccumulation", "MixedPrecision")]
        if clash:
            raise ValueError(f"cbs: {', '.join(clash)} rescale the autograd loss, which ScratchBackward does not use; "
                             f"remove them when training a scratch model")

    def before_backward(self) -> None:
        backprop(self.learn.model, self.learn.loss_func)
        raise CancelBackwardException()

    def cleanup_fit(self) -> None:
        # as the Learner's own cleanup: no batch stays alive in the layers or the loss after a fit
        self.learn.model.clear()
        self.learn.loss_func.clear()
