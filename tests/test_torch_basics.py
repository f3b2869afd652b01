"""fastai's small helpers (tensor, Module, to_np, set_seed, find_bs, ...) and kept_modes."""

from __future__ import annotations

import copy
import inspect
import os
import pickle
import random
import subprocess
import sys
import textwrap
import warnings
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import fastcore.basics
import fastcore.foundation
import numpy as np
import pytest
import torch
from torch import nn

import minilearn.callbacks.training
import minilearn.data
import minilearn.metrics
from minilearn.metrics import AvgMetric
from minilearn.torch_basics import (
    L, Module, default_device, find_bs, first, kept_modes, no_random, set_seed, tensor, to_cpu, to_detach,
    to_device, to_np,
)

REPO = Path(__file__).resolve().parents[1]
Pair = namedtuple("Pair", "x y")


@pytest.fixture()
def fastai_core(fastai):
    """fastai's torch_core module (skipped, through the `fastai` fixture, when fastai is missing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import fastai.torch_core
    return fastai.torch_core


@pytest.fixture()
def kept_cudnn():
    """Put cuDNN's global flags back after a test that sets them."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def draws() -> tuple:
    """A few numbers from each global generator: torch's, Python's and numpy's."""
    return torch.rand(3).tolist(), [random.random() for _ in range(3)], np.random.rand(3).tolist()


# -- kept_modes


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


# -- tensor


@pytest.mark.parametrize("x, dtype, shape", [
    ([1, 2, 3], torch.int64, (3,)),
    ([1.0, 2.0], torch.float32, (2,)),
    ((1, 2.5), torch.float32, (2,)),
    ([[1, 2], [3, 4], [5, 6]], torch.int64, (3, 2)),
    (7, torch.int64, ()),
    (1.5, torch.float32, ()),
    (True, torch.bool, ()),
    (np.float64(2.0), torch.float32, ()),
    ([], torch.float32, (0,)),
    (np.array([1, 2]), torch.int64, (2,)),
    (np.array([[1.0, 2.0]]), torch.float32, (1, 2)),  # float64 becomes float32
    (np.array([1, 2], dtype=np.uint16), torch.float32, (2,)),
    (np.array([True, False]), torch.bool, (2,)),
    (torch.tensor([1.0], dtype=torch.float64), torch.float32, (1,)),
    (torch.tensor([1, 2], dtype=torch.int32), torch.int32, (2,)),
])
def test_tensor_dtype_and_shape_from_each_kind_of_input(x, dtype, shape):
    t = tensor(x)
    assert isinstance(t, torch.Tensor)
    assert t.dtype == dtype and tuple(t.shape) == shape
    np.testing.assert_allclose(t.numpy().astype(float), np.asarray(x, dtype=float))


def test_tensor_of_several_arguments_is_one_vector():
    assert tensor(1, 2, 3).tolist() == [1, 2, 3] and tensor(1, 2, 3).dtype == torch.int64
    assert tensor(1, 2.5).dtype == torch.float32 and tensor(1, 2.5).shape == (2,)


def test_tensor_keeps_a_tensor_and_shares_a_numpy_arrays_memory():
    t = torch.arange(3)
    assert tensor(t) is t
    a = np.zeros(3, dtype=np.float32)
    tensor(a)[0] = 5.0
    assert a[0] == 5.0


def test_tensor_honours_dtype_device_and_requires_grad():
    assert tensor([1, 2], dtype=torch.float64).dtype == torch.float64  # an asked-for float64 stays
    assert tensor(torch.arange(2), dtype=torch.float32).dtype == torch.float32
    assert tensor(np.arange(2), device="meta").device.type == "meta"
    w = tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    assert w.grad.tolist() == [2.0, 4.0]


def test_tensor_from_a_pil_image_is_height_width_channels_uint8():
    image_module = pytest.importorskip("PIL.Image")
    rgb = image_module.new("RGB", (4, 3), color=(10, 20, 30))
    t = tensor(rgb)
    assert t.dtype == torch.uint8 and t.shape == (3, 4, 3)
    assert t[0, 0].tolist() == [10, 20, 30]
    assert tensor(image_module.new("L", (4, 3))).shape == (3, 4)


def test_importing_torch_basics_does_not_import_pil():
    code = "import sys, minilearn.torch_basics; print('PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("bad, error", [
    ([None, 1], TypeError), ([[1, 2], [3]], ValueError), (["a"], ValueError), ("abc", TypeError),
    (object(), TypeError),
])
def test_tensor_rejects_what_it_cannot_read_naming_x(bad, error):
    with pytest.raises(error, match="^x: "):
        tensor(bad)
    with pytest.raises(TypeError, match="requires_grad"):
        tensor([1.0], requires_grad="yes")


def test_tensor_equals_fastais(fastai_core):
    inputs = [[1, 2, 3], [1.0, 2.0], [[1, 2], [3, 4]], 3, 2.5, (1, 2.5), np.array([1.0, 2.0]),
              np.array([1, 2], dtype=np.uint16), torch.tensor([1.0], dtype=torch.float64)]
    for x in inputs:
        ours, theirs = tensor(x), fastai_core.tensor(x)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, x
        assert torch.equal(ours, torch.as_tensor(theirs)), x
    assert torch.equal(tensor(1, 2, 3), fastai_core.tensor(1, 2, 3))


# -- Module


class TwoLayers(Module):
    """A Module subclass that never calls super().__init__()."""

    def __init__(self, n_in: int, n_hidden: int = 4):
        self.hidden = nn.Linear(n_in, n_hidden)
        self.out = nn.Linear(n_hidden, 1)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        return self.out(self.hidden(x).relu())


def test_module_subclass_without_super_init_holds_parameters_and_trains():
    torch.manual_seed(0)
    model = TwoLayers(3)
    assert isinstance(model, nn.Module)
    assert len(list(model.parameters())) == 4
    assert set(model.state_dict()) == {"hidden.weight", "hidden.bias", "out.weight", "out.bias", "calls"}
    x = torch.randn(32, 3)
    y = x.sum(1, keepdim=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(100):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 4


def test_module_signature_is_the_subclass_init():
    assert list(inspect.signature(TwoLayers).parameters) == ["n_in", "n_hidden"]


def test_module_subclass_that_calls_super_init_late_keeps_its_layers():
    class Late(Module):
        def __init__(self):
            self.lin = nn.Linear(2, 2)
            super().__init__()  # a no-op: the layer assigned above stays registered

    assert len(list(Late().parameters())) == 2


def test_module_copies_and_pickles_with_its_weights():
    model = TwoLayers(3)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert other.hidden.weight is not model.hidden.weight
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_module_initialises_as_fastais(fastai_core):
    class Theirs(fastai_core.Module):
        def __init__(self, n_in: int, n_hidden: int = 4):
            self.hidden = nn.Linear(n_in, n_hidden)
            self.out = nn.Linear(n_hidden, 1)
            self.register_buffer("calls", torch.zeros(()))

        forward = TwoLayers.forward

    torch.manual_seed(1)
    ours = TwoLayers(3)
    torch.manual_seed(1)
    theirs = Theirs(3)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


# -- L and first


def test_l_and_first_are_fastcores():
    assert L is fastcore.foundation.L and first is fastcore.basics.first
    assert L([1, 2, 3]).map(lambda v: v * 2) == [2, 4, 6]
    assert first(v for v in [5, 6]) == 5 and first([]) is None


# -- to_device, to_cpu, to_np, to_detach


def nested(t: torch.Tensor):
    """A batch of every container kind, with a non-tensor inside."""
    return (t, [t, "name"], {"a": t}, Pair(t, 3), L([t]))


def test_to_device_moves_every_container_kind_and_keeps_their_types():
    out = to_device(nested(torch.ones(2)), "meta")
    assert out[0].is_meta and out[1][0].is_meta and out[2]["a"].is_meta and out[3].x.is_meta and out[4][0].is_meta
    assert out[1][1] == "name" and isinstance(out[3], Pair) and out[3].y == 3 and isinstance(out[4], L)


def test_to_device_without_a_device_returns_the_batch_itself():
    b = (torch.ones(1),)
    assert to_device(b) is b and to_device(b, None) is b


def test_to_device_is_still_importable_from_data():
    assert minilearn.data.to_device is to_device


def test_to_cpu_brings_every_tensor_to_the_cpu():
    out = to_cpu(nested(torch.ones(2)))
    assert out[0].device.type == "cpu" and out[3].x.device.type == "cpu" and out[2]["a"].tolist() == [1.0, 1.0]


def test_to_np_converts_tensors_in_nested_structures_and_passes_others_through():
    w = torch.ones(2, requires_grad=True)
    out = to_np(nested(w * 2))
    assert isinstance(out[0], np.ndarray) and out[0].tolist() == [2.0, 2.0]
    assert isinstance(out[1][0], np.ndarray) and out[1][1] == "name"
    assert isinstance(out[2]["a"], np.ndarray)
    assert isinstance(out[3], Pair) and isinstance(out[3].x, np.ndarray) and out[3].y == 3
    assert isinstance(to_np(torch.tensor(3.0)), np.ndarray)


def test_to_detach_cuts_the_graph_everywhere():
    w = torch.ones(2, requires_grad=True)
    for out in (to_detach(nested(w * 2)), to_detach(nested(w * 2), cpu=False, gather=False)):
        for t in (out[0], out[1][0], out[2]["a"], out[3].x, out[4][0]):
            assert not t.requires_grad and t.grad_fn is None and t.tolist() == [2.0, 2.0]
        assert out[1][1] == "name" and isinstance(out[3], Pair)
    with pytest.raises(TypeError, match="cpu"):
        to_detach(w, cpu="yes")
    with pytest.raises(TypeError, match="gather"):
        to_detach(w, gather=None)


_GATHER_WORKER = textwrap.dedent("""
    import json, sys, torch, torch.distributed as dist
    from minilearn.torch_basics import to_detach
    rank, init = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    preds = torch.full((rank + 1,), float(rank), requires_grad=True) * 1
    loss = torch.tensor(float(rank) * 2)
    got, local = to_detach((preds, {"loss": loss})), to_detach(preds, gather=False)
    print(json.dumps([got[0].tolist(), got[1]["loss"].item(), local.tolist()]))
    dist.destroy_process_group()
""")


def test_to_detach_gathers_every_processes_tensors(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_GATHER_WORKER)
    init = f"file://{tmp_path / 'store'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), init], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for r in range(2)]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            outs.append(out.strip().splitlines()[-1])
    finally:
        for p in procs:
            p.kill()
    import json
    rank0, rank1 = (json.loads(o) for o in outs)
    assert rank0[0] == rank1[0] == [0.0, 1.0, 1.0]  # rank order, uneven sizes
    assert rank0[1] == rank1[1] == 1.0  # a 0-d tensor (a loss) is averaged: (0 + 2) / 2
    assert rank0[2] == [0.0] and rank1[2] == [1.0, 1.0]  # gather=False keeps each process's own


def test_to_np_and_to_detach_equal_fastais(fastai_core):
    w = torch.arange(4.0, requires_grad=True)
    b = [w * 2, (w[:2],), {"a": w + 1}]
    ours, theirs = to_np(b), fastai_core.to_np(b)
    assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1][0], theirs[1][0])
    assert np.array_equal(ours[2]["a"], theirs[2]["a"])
    ours, theirs = to_detach(b), fastai_core.to_detach(b)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[2]["a"], theirs[2]["a"])
    assert type(ours[1]) is type(theirs[1]) and not theirs[0].requires_grad


# -- set_seed and no_random


def test_set_seed_gives_the_same_draws_from_torch_python_and_numpy():
    set_seed(7)
    first_draws = draws()
    set_seed(7)
    assert draws() == first_draws
    set_seed(8)
    other = draws()
    assert all(a != b for a, b in zip(other, first_draws))


def test_set_seed_seeds_cuda_too(monkeypatch):
    seeds = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeds.append)
    set_seed(11)
    assert seeds and seeds[-1] == 11  # queued until CUDA starts when it has not yet


def test_set_seed_reproducible_sets_cudnn_flags(kept_cudnn):
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    set_seed(1)
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)
    set_seed(1, reproducible=True)
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (True, False)


def test_set_seed_rejects_bad_arguments_naming_them():
    with pytest.raises(TypeError, match="^s: "):
        set_seed("1")
    with pytest.raises(TypeError, match="^s: "):
        set_seed(1.5)
    with pytest.raises(TypeError, match="^reproducible: "):
        set_seed(1, reproducible=1)


def test_set_seed_draws_equal_fastais(fastai_core):
    set_seed(123)
    ours = draws()
    fastai_core.set_seed(123)
    assert draws() == ours


def test_no_random_seeds_inside_and_restores_the_outer_streams_exactly(kept_cudnn):
    set_seed(0)
    draws()
    expected_after = draws()
    set_seed(42)
    expected_inside = draws()

    set_seed(0)
    draws()
    with no_random():
        assert draws() == expected_inside
    assert draws() == expected_after

    set_seed(0)
    draws()
    with pytest.raises(RuntimeError, match="boom"), no_random(seed=5):
        draws()
        raise RuntimeError("boom")
    assert draws() == expected_after


def test_no_random_puts_back_cudnn_flags(kept_cudnn):
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    with no_random():
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (True, False)
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (False, True)
    with no_random(reproducible=False):
        assert torch.backends.cudnn.benchmark


def test_no_random_leaves_the_outer_seed_queued_for_cuda(monkeypatch):
    seeds = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", seeds.append)
    torch.manual_seed(3)
    with no_random(seed=9):
        assert seeds[-1] == 9
    assert seeds[-1] == 3


def test_no_random_rejects_bad_arguments_before_touching_anything():
    set_seed(0)
    expected = draws()
    set_seed(0)
    with pytest.raises(TypeError, match="^seed: "):
        with no_random(seed="x"):
            pass
    with pytest.raises(TypeError, match="^reproducible: "):
        with no_random(reproducible=None):
            pass
    assert draws() == expected


def test_no_random_equals_fastais(fastai_core):
    set_seed(0)
    with no_random(seed=3):
        ours_inside = draws()
    ours_after = draws()
    set_seed(0)
    with fastai_core.no_random(seed=3):
        theirs_inside = draws()
    assert ours_inside == theirs_inside and draws() == ours_after


# -- default_device


def test_default_device_is_the_gpu_when_there_is_one_unless_use_is_false(monkeypatch):
    expected = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    if expected is None:
        assert default_device() == torch.device("cpu") or torch.backends.mps.is_available()
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        expected = torch.device("cuda", 0)
    for use in (-1, None, True):
        assert default_device(use) == expected
    assert default_device(False) == torch.device("cpu")
    assert isinstance(default_device(), torch.device)


def test_default_device_falls_back_to_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert default_device() == default_device(True) == torch.device("cpu")
    with pytest.raises(ValueError, match="^use: "):
        default_device("cuda")


def test_default_device_equals_fastais(fastai_core):
    assert default_device() == fastai_core.default_device()


# -- find_bs


@pytest.mark.parametrize("b, bs", [
    (torch.zeros(5, 3), 5),
    ((torch.zeros(4), torch.zeros(4, 2)), 4),
    ([torch.zeros(6, 1)], 6),
    ({"x": torch.zeros(3, 2), "y": torch.zeros(3)}, 3),
    (((torch.zeros(2, 7), torch.zeros(2)), torch.zeros(2)), 2),  # nested: the first tensor, depth first
    (Pair(torch.zeros(9), torch.zeros(9)), 9),
    (("names", torch.zeros(8)), 8),  # plain values are skipped
    (np.zeros((10, 2)), 10),
    ((), 1),  # an empty batch (no targets) counts one
    (([1, 2, 3],), 3),  # targets as a plain list
])
def test_find_bs(b, bs):
    assert find_bs(b) == bs


def test_find_bs_rejects_what_has_no_batch_dimension():
    with pytest.raises(ValueError, match="^b: "):
        find_bs((torch.tensor(1.0),))
    with pytest.raises(TypeError, match="^b: "):
        find_bs(3)


def test_find_bs_is_the_one_metrics_and_training_use():
    assert minilearn.metrics.find_bs is find_bs and minilearn.callbacks.training.find_bs is find_bs
    metric = AvgMetric(lambda pred: pred.mean())  # a metric of the predictions only: no targets
    metric.accumulate(SimpleNamespace(pred=torch.tensor([1.0, 3.0]), yb=()))
    metric.accumulate(SimpleNamespace(pred=torch.tensor([5.0]), yb=()))
    assert metric.count == 2 and float(metric.value) == pytest.approx(3.5)


def test_find_bs_equals_fastais(fastai_core):
    for b in (torch.zeros(5, 3), (torch.zeros(4), torch.zeros(4)), {"x": torch.zeros(3)},
              ((torch.zeros(2, 7),), torch.zeros(2)), [1, 2, 3]):
        assert find_bs(b) == fastai_core.find_bs(b)


# -- Path.ls


def test_path_ls_lists_a_folder_as_an_l_of_paths(tmp_path):
    for name in ("a.txt", "b.png", "c.txt"):
        (tmp_path / name).write_text("x")
    listed = tmp_path.ls()
    assert isinstance(listed, L) and all(isinstance(p, Path) for p in listed)
    assert sorted(p.name for p in listed) == ["a.txt", "b.png", "c.txt"]
    assert sorted(p.name for p in tmp_path.ls(file_exts=".txt")) == ["a.txt", "c.txt"]
    assert isinstance(Path(".").ls(), L)


def test_find_device_finds_the_first_tensor():
    from minilearn import find_device

    assert find_device(torch.zeros(2)) == torch.device("cpu")
    assert find_device(([1, 2], {"a": (None, torch.ones(1))})) == torch.device("cpu")
    assert find_device([1, "x"]) is None and find_device(()) is None


def test_replacing_yield_puts_the_attribute_back():
    import contextlib
    from types import SimpleNamespace

    from minilearn import replacing_yield

    class Holder:  # fastai's idiom: a context-manager method whose body is replacing_yield
        def __init__(self):
            self.a = 1

        @contextlib.contextmanager
        def a_changed(self, v):
            return replacing_yield(self, "a", v)

    h = Holder()
    with h.a_changed(2) as v:
        assert h.a == 2 and v == 2
    assert h.a == 1
    with pytest.raises(RuntimeError), h.a_changed(3):
        raise RuntimeError
    assert h.a == 1
    o = SimpleNamespace(a=1)
    with contextlib.contextmanager(replacing_yield)(o, "a", 5):
        assert o.a == 5
    assert o.a == 1
    gen = replacing_yield(o, "a", 7)  # a plain generator: closing it puts the value back too
    assert next(gen) == 7 and o.a == 7
    gen.close()
    assert o.a == 1
