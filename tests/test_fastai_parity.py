"""Side by side with the real fastai: same data order, same initial weights, same numbers."""

from __future__ import annotations

import importlib
import tempfile
import io
import operator
import re
import contextlib
from pathlib import Path

import pytest
import torch
from torch import nn

import minilearn
from minilearn import DataLoaders, batch_accuracy, datasets, mnist_loss
from minilearn.compare import compare_lr_find, compare_with_fastai, make_learners
from synthetic import class_data

TOL = 1e-5


@pytest.fixture(scope="module")
def mnist_sample(mnist_root):
    return datasets.mnist_3v7(root=mnist_root)


def loaders(data, bs=256, seed=42):
    return lambda: DataLoaders.from_tensors(*data, bs=bs, seed=seed)


def relu_net(seed=42):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 30), nn.ReLU(), nn.Linear(30, 1))


def linear(seed=42):
    torch.manual_seed(seed)
    return nn.Linear(784, 1)


def assert_close(comparison, tol=TOL):
    diffs = comparison.max_diffs()
    per_epoch = {k: v for k, v in diffs.items() if "per batch" not in k or k.startswith(("lr", "mom"))}
    assert all(v <= tol for v in per_epoch.values()), diffs
    ml, fa = comparison.minilearn, comparison.fastai
    assert ml.names == fa.names and len(ml.values) == len(fa.values)
    return diffs


@pytest.mark.mnist
@pytest.mark.parametrize("case, model, kwargs", [
    ("linear, SGD", linear, dict(n_epoch=4, lr=1.0)),
    ("relu net, SGD", relu_net, dict(n_epoch=4, lr=0.1)),
    ("relu net, SGD with momentum and wd", relu_net, dict(n_epoch=4, lr=0.05, opt_kwargs=dict(mom=0.9, wd=0.01))),
    ("relu net, Adam with fastai's defaults", relu_net, dict(n_epoch=4, lr=1e-3, opt="adam")),
    ("relu net, fit_one_cycle with Adam", relu_net, dict(n_epoch=4, lr=1e-2, opt="adam", method="fit_one_cycle")),
])
def test_same_numbers_as_fastai(fastai, mnist_sample, case, model, kwargs):
    c = compare_with_fastai(loaders(mnist_sample), model(), mnist_loss, [batch_accuracy], **kwargs)
    diffs = assert_close(c)
    assert c.minilearn.column("batch_accuracy")[-1] > 0.9
    if kwargs.get("method") == "fit_one_cycle":
        # the learning rate and momentum agree at every batch
        n = len(c.minilearn.lrs)
        assert n == 4 * 49 and len(c.minilearn.hps["mom"]) == n
        assert diffs["lr (per batch)"] <= 1e-8 and diffs["mom (per batch)"] <= 1e-7


@pytest.mark.mnist
def test_lr_find_matches_fastai(fastai, mnist_sample):
    c = compare_lr_find(loaders(mnist_sample), relu_net(), mnist_loss, opt="adam", num_it=100)
    assert len(c.lrs[0]) == len(c.lrs[1]) == 100
    assert c.lrs[0] == pytest.approx(c.lrs[1], rel=1e-12)
    ml_valley, fa_valley = c.valley
    assert abs(ml_valley - fa_valley) / fa_valley < 0.01


def scripted_learners(values, tmp_path, fastai, cbs):
    """Both frameworks on the same synthetic data, with a metric whose value per epoch is scripted."""
    x, y, vx, vy = class_data()
    learners = []
    for framework in ("minilearn", "fastai"):
        state = {"epoch": 0}

        def scripted(pred, targ, _state=state):
            return torch.tensor(float(values[_state["epoch"]]))

        torch.manual_seed(0)
        ml, fa = make_learners(lambda: DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0), nn.Linear(4, 3),
                               nn.CrossEntropyLoss(), [scripted], path=tmp_path / framework)
        learn = ml if framework == "minilearn" else fa
        base = minilearn.Callback if framework == "minilearn" else importlib.import_module("fastai.callback.core").Callback

        class Follow(base):
            def before_validate(self, _state=state):
                _state["epoch"] = self.epoch

        learn.add_cb(Follow())
        learners.append((learn, cbs(framework)))
    return learners


@pytest.mark.parametrize("values, patience, min_delta", [
    ([0.5, 0.6, 0.6, 0.7, 0.9, 0.9], 1, 0.0),
    ([0.5, 0.6, 0.6, 0.7, 0.9, 0.9], 2, 0.0),
    ([0.5, 0.55, 0.58, 0.59, 0.9, 0.9], 2, 0.05),
    ([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], 1, 0.0),
])
def test_early_stopping_stops_at_the_same_epoch(fastai, tmp_path, capsys, values, patience, min_delta):
    import fastai.callback.tracker as ft

    def cbs(framework):
        mod = minilearn if framework == "minilearn" else ft
        return mod.EarlyStoppingCallback(monitor="scripted", min_delta=min_delta, patience=patience)

    epochs = []
    for learn, cb in scripted_learners(values, tmp_path, fastai, cbs):
        learn.fit(6, lr=0.1, cbs=cb)
        epochs.append(len(learn.recorder.values))
    assert epochs[0] == epochs[1]
    out = capsys.readouterr().out
    assert out.count("early stopping") == (2 if epochs[0] < 6 else 0)


@pytest.mark.parametrize("values, comp", [
    ([0.3, 0.2, 0.25, 0.1, 0.15, 0.1], operator.lt),
    ([0.3, 0.2, 0.25, 0.1, 0.15, 0.35], operator.gt),
])
def test_save_model_saves_at_the_same_epochs(fastai, tmp_path, capsys, values, comp):
    import numpy as np
    import fastai.callback.tracker as ft

    def cbs(framework):
        if framework == "minilearn":
            return minilearn.SaveModelCallback(monitor="scripted", comp=comp, fname="best")
        return ft.SaveModelCallback(monitor="scripted", comp=np.less if comp is operator.lt else np.greater,
                                    fname="best")

    saved = []
    for learn, cb in scripted_learners(values, tmp_path, fastai, cbs):
        learn.fit(6, lr=0.1, cbs=cb)
        out = capsys.readouterr().out
        saved.append([int(e) for e in re.findall(r"Better model found at epoch (\d+)", out)])
        assert (Path(learn.path) / "models" / "best.pth").is_file()
    assert saved[0] == saved[1] and saved[0]


# ---------------------------------------------------------------- fastai callbacks, ported
PORTED = Path(__file__).parent / "ported"


def test_ported_callbacks_differ_only_in_imports():
    def body(name):
        return [l for l in (PORTED / name).read_text().splitlines()[1:] if not l.startswith(("from ", "import "))]

    assert body("minilearn_callbacks.py") == body("fastai_callbacks.py")
    assert len(body("minilearn_callbacks.py")) > 30


def load_ported(framework):
    return importlib.import_module(f"ported.{framework}_callbacks")


@pytest.mark.parametrize("make", [
    lambda m: [m.GradNormLogger()],
    lambda m: [m.SkipOddBatches()],
    lambda m: [m.StopAfterNBatches(7)],
    lambda m: [m.HalveInputs(), m.PredStats()],
    lambda m: [m.ScaleLoss(0.5), m.EpochLog()],
    lambda m: [m.GradNormLogger(), m.SkipOddBatches(), m.EpochLog(), m.PredStats()],
], ids=["grad-norm", "skip-batches", "stop-after-n", "change-xb", "scale-loss", "together"])
def test_fastai_callbacks_run_unchanged(fastai, make):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    x, y, vx, vy = class_data(n=120, n_valid=40)
    torch.manual_seed(0)
    ml, fa = make_learners(lambda: DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0), nn.Linear(4, 3),
                           nn.CrossEntropyLoss(), opt="sgd")
    ml_cbs, fa_cbs = make(load_ported("minilearn")), make(load_ported("fastai"))
    ml.fit(3, lr=0.1, cbs=ml_cbs)
    fa.fit(3, lr=0.1, cbs=fa_cbs)
    for a, b in zip(ml.model.parameters(), fa.model.parameters()):
        assert torch.allclose(a, b, atol=TOL)
    for a, b in zip(ml_cbs, fa_cbs):
        for attr in ("norms", "skipped", "seen", "rows", "means"):
            if hasattr(a, attr):
                assert flat(getattr(a, attr)) == pytest.approx(flat(getattr(b, attr)), abs=TOL), attr
    # valid_loss and metrics always agree; the smoothed train loss only when no batch is skipped
    # (see test_difference_cancelled_batches_are_not_recorded)
    first = 0 if not any(hasattr(c, "skipped") for c in ml_cbs) else 1
    assert flat([r[first:] for r in fa.recorder.values]) == pytest.approx(
        flat([r[first:] for r in ml.recorder.values]), abs=TOL)


def flat(x) -> list[float]:
    """Numbers in nested lists/tuples, flattened, as floats."""
    if isinstance(x, (list, tuple)) or type(x).__name__ == "L":
        return [v for item in x for v in flat(item)]
    return [float(x)]


def test_comparisons_leave_no_folder_behind(fastai, tmp_path, monkeypatch):
    """compare_with_fastai / compare_lr_find give their learners a temporary folder and remove it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    x, y, vx, vy = class_data()

    def make_dls():
        return DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0)

    compare_with_fastai(make_dls, nn.Linear(4, 3), nn.CrossEntropyLoss(), n_epoch=1, lr=0.1)
    compare_lr_find(make_dls, nn.Linear(4, 3), nn.CrossEntropyLoss(), num_it=10)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- deliberate differences
def small_pair(tmp_path=None):
    x, y, vx, vy = class_data()
    torch.manual_seed(0)
    return make_learners(lambda: DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0), nn.Linear(4, 3),
                         nn.CrossEntropyLoss(), opt="sgd", **({"path": tmp_path} if tmp_path else {}))


def test_difference_errors_keep_their_message(fastai):
    from fastai.callback.core import Callback as FastaiCallback

    def raiser(base):
        class Boom(base):
            def after_loss(self):
                raise ValueError("my own error")
        return Boom()

    ml, fa = small_pair()
    with pytest.raises(ValueError) as ours:
        ml.fit(1, cbs=raiser(minilearn.Callback))
    with pytest.raises(ValueError) as theirs:
        fa.fit(1, cbs=raiser(FastaiCallback))
    assert str(ours.value) == "my own error" and "boom" in ours.value.__notes__[0]
    assert str(theirs.value) != "my own error" and "my own error" in str(theirs.value)


def test_difference_writing_learner_state_on_the_callback(fastai):
    from fastai.callback.core import Callback as FastaiCallback

    def writer(base):
        class Writer(base):
            def after_pred(self):
                self.pred = self.pred * 0
        return Writer()

    ml, fa = small_pair()
    with pytest.raises(AttributeError, match=r"self\.learn\.pred"):
        ml.fit(1, cbs=writer(minilearn.Callback))
    with pytest.warns(UserWarning, match="shadowing"):
        fa.fit(1, cbs=writer(FastaiCallback))


def test_difference_lr_find_leaves_no_trace(fastai, tmp_path):
    results = {}
    for with_lr_find in (False, True):
        ml, fa = small_pair(tmp_path)
        if with_lr_find:
            ml.lr_find(num_it=20, show_plot=False)
            fa.lr_find(num_it=20, show_plot=False)
        ml.fit(2, lr=0.1)
        fa.fit(2, lr=0.1)
        results[with_lr_find] = ([float(v) for v in ml.recorder.values[-1]], [float(v) for v in fa.recorder.values[-1]])
    assert results[True][0] == results[False][0]   # minilearn: as if lr_find never ran
    assert results[True][1] != results[False][1]   # fastai: the data order moved on


def test_difference_recorder_log_and_validate_events(fastai):
    from fastai.callback.core import Callback as FastaiCallback

    def logger(base):
        class Log(base):
            def __init__(self):
                self.events = []

            def before_fit(self):
                self.events.append("before_fit")

            def before_validate(self):
                self.events.append("before_validate")
        return Log()

    ml, fa = small_pair()
    ml.fit(1)
    fa.fit(1)
    assert isinstance(ml.recorder.log, dict) and not isinstance(fa.recorder.log, dict)
    assert list(ml.recorder.log) == ["epoch", "train_loss", "valid_loss", "time"] and fa.recorder.log[0] == 0
    a, b = logger(minilearn.Callback), logger(FastaiCallback)
    ml.validate(cbs=a)
    fa.validate(cbs=b)
    assert a.events == ["before_validate"] and b.events == ["before_fit", "before_validate"]


def test_difference_no_bar_keeps_the_table(fastai):
    from fastai.callback.progress import ProgressCallback as FastaiProgress

    ml, fa = small_pair()
    ml.add_cb(minilearn.ProgressCallback())
    fa.add_cb(FastaiProgress())
    fa.logger = print
    outs = []
    for learn in (ml, fa):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), learn.no_bar():
            learn.fit(1)
        outs.append(buf.getvalue())
    assert outs[0].splitlines()[0].split() == ["epoch", "train_loss", "valid_loss", "time"]
    assert "train_loss" not in outs[1] and outs[1].startswith("[0,")


def test_difference_half_precision_valid_loss(fastai):
    from fastai.learner import AvgLoss as FastaiAvgLoss

    class Fake:
        loss = torch.tensor(6000.0, dtype=torch.float16)
        yb = (torch.zeros(64),)

        @staticmethod
        def to_detach(t):
            return t.detach()

    ours, theirs = minilearn.AvgLoss(), FastaiAvgLoss()
    ours.reset(), theirs.reset()
    for _ in range(10):
        ours.accumulate(Fake())
        theirs.accumulate(Fake())
    assert float(ours.value) == pytest.approx(6000.0)
    assert not torch.isfinite(torch.as_tensor(theirs.value))


def test_difference_cancelled_batches_are_not_recorded(fastai):
    """fastai's Recorder counts a batch cancelled before its loss with the previous batch's loss."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    ml, fa = small_pair()
    ml.fit(1, lr=0.1, cbs=load_ported("minilearn").SkipOddBatches())
    fa.fit(1, lr=0.1, cbs=load_ported("fastai").SkipOddBatches())
    n = len(ml.dls.train)
    assert len(ml.recorder.losses) == (n + 1) // 2 and len(fa.recorder.losses) == n
    assert ml.recorder.values[0][1:] == pytest.approx([float(v) for v in fa.recorder.values[0][1:]], abs=TOL)


def test_difference_save_model_without_any_save(fastai, tmp_path):
    """With a monitor that never improves (NaN), fastai still tries to load the best model at the end."""
    import fastai.callback.tracker as ft

    def cbs(framework):
        mod = minilearn if framework == "minilearn" else ft
        return mod.SaveModelCallback(monitor="scripted", fname="best")

    (ml, ml_cb), (fa, fa_cb) = scripted_learners([float("nan")] * 3, tmp_path, fastai, cbs)
    ml.fit(2, lr=0.1, cbs=ml_cb)
    assert ml_cb.saved_epochs == [] and len(ml.recorder.values) == 2
    with pytest.raises(FileNotFoundError):
        fa.fit(2, lr=0.1, cbs=fa_cb)


def test_difference_terminate_on_nan_before_the_step(fastai):
    from fastai.callback.tracker import TerminateOnNaNCallback as FastaiNaN

    x, y, vx, vy = class_data()
    x = x.clone()
    x[20] = float("nan")  # in batch 1 (bs 16, unshuffled)
    torch.manual_seed(0)
    ml, fa = make_learners(lambda: DataLoaders.from_tensors(x, y, vx, vy, bs=16, shuffle=False), nn.Linear(4, 3),
                           nn.CrossEntropyLoss(), opt="sgd")
    ml.fit(1, lr=0.1, cbs=minilearn.TerminateOnNaNCallback())
    fa.fit(1, lr=0.1, cbs=FastaiNaN())
    assert all(torch.isfinite(p).all() for p in ml.model.parameters())
    assert not all(torch.isfinite(p).all() for p in fa.model.parameters())


def test_difference_export_holds_no_code(fastai, tmp_path):
    import pickle

    from fastai.data.core import Datasets
    from fastai.data.transforms import ItemGetter

    ml, _ = small_pair(tmp_path)
    x, y, vx, vy = class_data()
    items = list(zip(torch.cat([x, vx]), torch.cat([y, vy])))
    dsets = Datasets(items, [[ItemGetter(0)], [ItemGetter(1)]], splits=[list(range(len(x))), list(range(len(x), len(items)))])
    fa = fastai.Learner(dsets.dataloaders(bs=16), nn.Linear(4, 3), loss_func=nn.CrossEntropyLoss(), path=tmp_path)
    ours = ml.export("ours.pth")
    fa.export("theirs.pkl")
    assert torch.load(ours, weights_only=True)["format"] == "minilearn-export"   # plain data
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "theirs.pkl", weights_only=True)  # fastai pickles the whole Learner
