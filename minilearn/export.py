"""Exporting a trained model for inference, in a file that cannot run code when it is loaded.

The format (`learn.export(fname)`) is a `torch.save` of plain data, loaded back with
`torch.load(weights_only=True)`:

    {"format": "minilearn-export", "version": 1,
     "state_dict": {name: tensor, ...},          # the weights
     "architecture": [...] or None,              # see below
     "item_ndim": int}                           # dimensions of one input item (to tell items from batches)

`architecture` describes an `nn.Sequential` of standard layers (Linear, ReLU, Sigmoid, Tanh,
LeakyReLU, Softmax, LogSoftmax, Dropout, Flatten, Identity, BatchNorm1d, nested Sequentials)
as a list of `{"type": name, "args": {...}}`, from which `load_learner` rebuilds it. For any
other model `architecture` is None and `load_learner(fname, model=MyModel(...))` loads the
weights into a model made by your own code: the file itself never supplies code.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import torch
from torch import nn

from minilearn.checkpoint import check_weights_fit, load_checkpoint, save_checkpoint
from minilearn.distributed import distrib_barrier, is_rank0
from minilearn.torch_basics import kept_modes

FORMAT, VERSION = "minilearn-export", 1

# layer type -> the constructor arguments read back from an instance
_LAYERS: dict[str, tuple[type, tuple[str, ...]]] = {
    "Linear": (nn.Linear, ("in_features", "out_features")),
    "ReLU": (nn.ReLU, ()),
    "Sigmoid": (nn.Sigmoid, ()),
    "Tanh": (nn.Tanh, ()),
    "LeakyReLU": (nn.LeakyReLU, ("negative_slope",)),
    "Softmax": (nn.Softmax, ("dim",)),
    "LogSoftmax": (nn.LogSoftmax, ("dim",)),
    "Dropout": (nn.Dropout, ("p",)),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
    "Identity": (nn.Identity, ()),
    "BatchNorm1d": (nn.BatchNorm1d, ("num_features", "eps", "momentum", "affine", "track_running_stats")),
}


def describe(model: nn.Module) -> list | None:
    """The architecture of an nn.Sequential of standard layers as plain data, else None."""
    if type(model) is not nn.Sequential:
        return None
    layers = []
    for layer in model:
        kind = type(layer).__name__
        if type(layer) is nn.Sequential:
            inner = describe(layer)
            if inner is None:
                return None
            layers.append({"type": "Sequential", "args": {"layers": inner}})
        elif kind in _LAYERS and type(layer) is _LAYERS[kind][0]:
            args = {a: getattr(layer, a) for a in _LAYERS[kind][1]}
            if kind == "Linear":
                args["bias"] = layer.bias is not None
            layers.append({"type": kind, "args": args})
        else:
            return None
    return layers


MAX_DEPTH, MAX_MODULES = 16, 10_000  # limits on what an export file may ask `build` to make
_EXTRA_ARGS = {"Linear": ("bias",)}


def build(architecture: list) -> nn.Sequential:
    """Rebuild the nn.Sequential that `describe` described, on the meta device (no memory yet).

    Only the known layer types, with exactly their known arguments as plain numbers or flags
    (never a dtype, a device or anything else from the file), at most MAX_DEPTH deep and
    MAX_MODULES layers: a file cannot make `load_learner` allocate what its weights do not hold.
    """
    count = [0]

    def make(spec_list, depth: int) -> nn.Sequential:
        if not isinstance(spec_list, list):
            raise ValueError(f"architecture: expected a list of layers, got {type(spec_list).__name__}")
        if depth > MAX_DEPTH:
            raise ValueError(f"architecture: nested deeper than {MAX_DEPTH} Sequentials")
        layers = []
        for spec in spec_list:
            count[0] += 1
            if count[0] > MAX_MODULES:
                raise ValueError(f"architecture: more than {MAX_MODULES} layers")
            if not isinstance(spec, dict) or set(spec) != {"type", "args"} or not isinstance(spec["args"], dict):
                raise ValueError(f"architecture: a layer must be {{'type': ..., 'args': {{...}}}}, got {spec!r:.100}")
            kind, args = spec["type"], spec["args"]
            if kind == "Sequential":
                if set(args) != {"layers"}:
                    raise ValueError(f"architecture: a Sequential takes only 'layers', got {sorted(args)}")
                layers.append(make(args["layers"], depth + 1))
                continue
            if kind not in _LAYERS:
                raise ValueError(f"architecture: unknown layer type {kind!r}")
            allowed = set(_LAYERS[kind][1]) | set(_EXTRA_ARGS.get(kind, ()))
            if set(args) - allowed:
                raise ValueError(f"architecture: {kind} takes {sorted(allowed)}, the file gives {sorted(args)}")
            plain = all(v is None or isinstance(v, (bool, int, float)) for v in args.values())
            if not plain:
                raise ValueError(f"architecture: {kind}'s arguments must be plain numbers, got {args!r:.100}")
            layers.append(_LAYERS[kind][0](**args))
        return nn.Sequential(*layers)

    with torch.device("meta"):
        return make(architecture, 0)


def export_model(model: nn.Module, path: str | Path, item_ndim: int) -> Path:
    """Write the export file for `model` (atomically)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint({"format": FORMAT, "version": VERSION, "state_dict": state,
                            "architecture": describe(model), "item_ndim": item_ndim}, path)


# ---------------------------------------------------------------- from a Learner
def export_learner(learn, fname: str | Path = "export.pth") -> Path:
    """`Learner.export`: the model for inference in `learn.path/fname` (rank 0 writes, all wait)."""
    fname = Path(fname)
    path = fname if fname.is_absolute() else learn.path / fname
    if is_rank0():
        export_model(learn.model, path, item_ndim=item_ndim(learn))
    distrib_barrier()
    return path


# dimensions of one input item, per training loader: looked up once, as a batch may be costly to make
_ITEM_NDIM: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def item_ndim(learn) -> int:
    """Dimensions of one input item (to tell an item from a batch): the training batch's, less one."""
    dl = learn.dls.train
    if dl not in _ITEM_NDIM:
        _ITEM_NDIM[dl] = dl.one_batch()[0].ndim - 1
    return _ITEM_NDIM[dl]


class InferenceLearner:
    """What `load_learner` gives: a model in eval mode and `predict` / `get_preds` for new data."""

    def __init__(self, model: nn.Module, item_ndim: int, device=None):
        self.model, self.item_ndim = model.eval(), item_ndim
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model.to(self.device)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output for one item (no batch dimension) or a batch of items, on the CPU."""
        return predict(self.model, x, self.item_ndim, self.device)


def predict(model: nn.Module, x: torch.Tensor, item_ndim: int, device) -> torch.Tensor:
    """Run `model` in eval mode without gradients on one item or a batch; the model's mode is kept."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a tensor, got {type(x).__name__}")
    single = x.ndim == item_ndim
    if not single and x.ndim != item_ndim + 1:
        raise ValueError(f"x: expected one item with {item_ndim} dimension(s) or a batch with {item_ndim + 1}, "
                         f"got shape {tuple(x.shape)}")
    with kept_modes(model), torch.no_grad():
        model.eval()
        out = model(x.unsqueeze(0).to(device) if single else x.to(device))
    out = out.cpu()
    return out[0] if single else out


def load_learner(fname: str | Path, model: nn.Module | None = None, device=None) -> InferenceLearner:
    """Load what `Learner.export` wrote, for inference; `model` supplies the architecture if needed."""
    ckpt = load_checkpoint(fname)
    if ckpt.get("format") != FORMAT:
        raise ValueError(f"fname: {fname} is not a minilearn export file (use Learner.load for checkpoints)")
    if ckpt.get("version") != VERSION or not isinstance(ckpt.get("state_dict"), dict) \
            or not isinstance(ckpt.get("item_ndim"), int):
        raise ValueError(f"fname: {fname} is a minilearn export file of an unknown version or incomplete "
                         f"(version {ckpt.get('version')!r}; this minilearn reads version {VERSION})")
    if model is None:
        if ckpt.get("architecture") is None:
            raise ValueError(f"model: {fname} holds the weights of a model that is not a plain nn.Sequential "
                             f"of standard layers; pass model=YourModel(...) to load them into")
        model = build(ckpt["architecture"])  # on the meta device: shapes only, no memory
        check_weights_fit(model, ckpt["state_dict"], fname)  # the weights must be what it describes
        model = model.to_empty(device="cpu")  # memory now, for the weights the file does hold
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    check_weights_fit(model, ckpt["state_dict"], fname)
    model.load_state_dict(ckpt["state_dict"])
    return InferenceLearner(model, ckpt["item_ndim"], device)


def decoded_prediction(out: torch.Tensor, loss_func, vocab):
    """fastai's `(decoded, index, probabilities)` for one item's output when `loss_func` has
    `activation` and `decodes` and a `vocab` names the classes: the probabilities, the decoded
    class index (or multi-label mask), and its name (or names). Otherwise `out` unchanged."""
    activation, decodes = getattr(loss_func, "activation", None), getattr(loss_func, "decodes", None)
    if activation is None or decodes is None or vocab is None:
        return out
    probs = activation(out)
    index = decodes(probs)
    if index.dtype == torch.bool:  # multi-label: every class above the threshold
        return [vocab[i] for i in torch.nonzero(index).flatten().tolist()], index, probs
    if index.ndim == 0:
        return vocab[int(index)], index, probs
    return [vocab[i] for i in index.tolist()], index, probs  # a batch of items
