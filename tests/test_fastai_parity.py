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
from synthetic import class_data, linear_data

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


# ---------------------------------------------------------------- fastai scripts, ported
# tests/ported/{fastai,minilearn}_scripts.py: callbacks and short training scripts as fastai users
# write them, the same file but for its imports. Each script makes its own model after
# `set_seed(0)` and is given loaders built the same way, so both frameworks start from the same
# weights and see the same batches.
def load_scripts(framework):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    return importlib.import_module(f"ported.{framework}_scripts")


def test_ported_scripts_differ_only_in_imports():
    def body(name):
        return [l for l in (PORTED / name).read_text().splitlines()[1:] if not l.startswith(("from ", "import "))]

    assert body("minilearn_scripts.py") == body("fastai_scripts.py")
    assert len(body("minilearn_scripts.py")) > 200


def class_dls():
    x, y, vx, vy = class_data(n=96, n_valid=32)
    return DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0)


def multilabel_dls():
    x, y, vx, vy = class_data(n=96, n_valid=32)
    return DataLoaders.from_tensors(x, nn.functional.one_hot(y, 3).float(), vx, nn.functional.one_hot(vy, 3).float(),
                                    bs=16, seed=0)


def regression_dls():
    x, y, vx, vy = linear_data(n=96, n_valid=32)
    return DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=0)


def run_both(script, make_dls=class_dls, *args, **kwargs):
    """`script` of the ported files run by minilearn and by fastai: (minilearn's result, fastai's)."""
    return tuple(getattr(load_scripts(fw), script)(make_dls(), *args, **kwargs) for fw in ("minilearn", "fastai"))


def assert_same_weights(ml, fa):
    """Every parameter and buffer (BatchNorm statistics too) within TOL."""
    a, b = ml.model.state_dict(), fa.model.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=TOL), k


def assert_same_values(ml_values, fa_values):
    """Per-epoch [train_loss, valid_loss, *metrics] rows within TOL (fastai's rows are `L`s)."""
    assert [len(r) for r in ml_values] == [len(r) for r in fa_values]
    assert flat(ml_values) == pytest.approx(flat(fa_values), abs=TOL)


def assert_same_tensor(a, b, name=""):
    assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape, a.dtype, b.dtype)
    assert torch.allclose(a.float(), b.float(), atol=TOL), name


@pytest.mark.parametrize("kind, make_dls", [
    ("ce", class_dls), ("bce", multilabel_dls), ("mse", regression_dls), ("ls", class_dls),
], ids=["CrossEntropyLossFlat", "BCEWithLogitsLossFlat", "MSELossFlat", "LabelSmoothingCrossEntropyFlat"])
def test_scripts_flat_losses_and_predictions(fastai, kind, make_dls):
    """Trained with each flat loss and its metric; get_preds(with_decoded, with_loss), get_preds(ds_idx=0)
    and validate(ds_idx=0/1) give fastai's tensors (shape, dtype and values)."""
    (ml, ours), (fa, theirs) = run_both("fit_with_loss", make_dls, kind)
    assert_same_values(ours["values"], theirs["values"])
    assert_same_weights(ml, fa)
    for name in ("preds", "targs", "decoded", "losses", "train_preds", "train_targs"):
        assert_same_tensor(ours[name], theirs[name], name)
    assert len(ours["train_preds"]) == 96 and len(ours["preds"]) == 32
    for name in ("valid", "train"):
        assert flat(ours[name]) == pytest.approx(flat(theirs[name]), abs=TOL), name
    # the per-item losses average to the validation loss, in both
    assert float(ours["losses"].mean()) == pytest.approx(flat(theirs["valid"])[0], abs=TOL)


def test_scripts_callbacks_read_learner_state(fastai):
    """Another callback by name (`self.recorder`), the learner's smooth_loss, an attribute another callback
    set (`self.learn.pred_mean = ...` read as `self.pred_mean`), the model's layers through the learner."""
    cbs = {fw: [m.TrackSmoothLoss(), m.PublishPredMean(), m.ReadPredMean(), m.WatchModel()]
           for fw, m in (("minilearn", load_scripts("minilearn")), ("fastai", load_scripts("fastai")))}
    ml = load_scripts("minilearn").fit_reading_state(class_dls(), cbs["minilearn"])
    fa = load_scripts("fastai").fit_reading_state(class_dls(), cbs["fastai"])
    assert_same_values(ml.recorder.values, fa.recorder.values)
    assert_same_weights(ml, fa)
    track, _, read, watch = cbs["minilearn"]
    f_track, _, f_read, f_watch = cbs["fastai"]
    assert len(track.smooth) == 2 * 6
    assert track.n_recorded == f_track.n_recorded == list(range(1, 13))  # order > Recorder.order: after it
    assert flat(track.smooth) == pytest.approx(flat(f_track.smooth), abs=TOL)
    assert read.seen == pytest.approx(f_read.seen, abs=TOL) and len(read.seen) == 2 * (6 + 2)
    assert flat(watch.norms) == pytest.approx(flat(f_watch.norms), abs=TOL) and len(watch.norms) == 12


def test_difference_run_after_alone_places_the_callback(fastai):
    """Documented difference: minilearn honours `run_after`; fastai 2.8 sorts by `order` alone, so a
    default-order callback with run_after=Recorder runs before fastai's Recorder and after ours."""
    ml_cb, fa_cb = load_scripts("minilearn").CountRecorded(), load_scripts("fastai").CountRecorded()
    load_scripts("minilearn").fit_reading_state(class_dls(), [ml_cb])
    load_scripts("fastai").fit_reading_state(class_dls(), [fa_cb])
    assert ml_cb.n_recorded == [n + 1 for n in fa_cb.n_recorded]  # ours sees each batch's loss recorded


@pytest.mark.parametrize("inplace", [
    False,
    True,
], ids=["loss_grad = loss_grad + penalty", "loss_grad += penalty"])
def test_scripts_penalty_on_loss_grad_leaves_logged_loss(fastai, inplace):
    """fastbook ch. 16's regulariser in after_loss: the gradient sees the penalty, the logged loss does not."""
    ml_m, fa_m = load_scripts("minilearn"), load_scripts("fastai")
    ml_cbs, fa_cbs = [ml_m.L2Penalty(0.01, inplace), ml_m.LoggedLossCheck()], [fa_m.L2Penalty(0.01, inplace),
                                                                            fa_m.LoggedLossCheck()]
    ml = ml_m.fit_reading_state(class_dls(), ml_cbs)
    fa = fa_m.fit_reading_state(class_dls(), fa_cbs)
    assert_same_weights(ml, fa)  # the penalty reached the gradients the same way
    assert max(fa_cbs[1].diffs) <= TOL
    assert max(ml_cbs[1].diffs) <= TOL  # the logged loss is the loss function's, without the penalty
    assert_same_values(ml.recorder.values, fa.recorder.values)
    assert ml.recorder.losses == pytest.approx(flat(fa.recorder.losses), abs=TOL)
    plain = ml_m.fit_reading_state(class_dls(), [])
    assert not torch.allclose(plain.model.fc1.weight, ml.model.fc1.weight, atol=1e-3)  # the penalty did train


def test_scripts_events_called_by_hand(fastai):
    """cb('before_fit'), cb(event.after_batch), cb('after_batch'): run_valid=False callbacks skip the batch
    events while the learner is not training (before any fit, and after one: it ends in validation)."""
    ours, theirs = run_both("events_by_hand")
    assert ours == theirs == [2, 0, 2, 0]


def test_scripts_fastai_helpers(fastai):
    """tensor, L, first, to_np, to_detach, set_seed, find_bs: the same values and types."""
    import numpy as np

    ours, theirs = (load_scripts(fw).helpers() for fw in ("minilearn", "fastai"))
    assert ours.keys() == theirs.keys()
    for k in ours:
        a, b = ours[k], theirs[k]
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, torch.as_tensor(b)) and a.dtype == b.dtype, k
        elif isinstance(a, np.ndarray):
            assert isinstance(b, np.ndarray) and np.array_equal(a, b) and a.dtype == b.dtype, k
        else:
            assert a == b, k


def test_scripts_module_without_super_init(fastai):
    """A `Module` subclass that never calls super().__init__() registers its layers, in both."""
    for fw in ("minilearn", "fastai"):
        m = load_scripts(fw)
        m.set_seed(0)
        net = m.TinyNet(4, 8, 3)
        assert [n for n, _ in net.named_parameters()] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
        assert net(torch.zeros(2, 4)).shape == (2, 3)
    ml_m, fa_m = load_scripts("minilearn"), load_scripts("fastai")
    ml_m.set_seed(0)
    a = ml_m.TinyNet(4, 8, 3)
    fa_m.set_seed(0)
    b = fa_m.TinyNet(4, 8, 3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_scripts_fine_tune_two_parameter_groups(fastai):
    """fine_tune(1, freeze_epochs=1) with a splitter of two groups and fastai's default Adam: the frozen
    epoch trains the head (and the BatchNorm, train_bn), then both groups at discriminative rates."""
    (ml, ml_log), (fa, fa_log) = run_both("fine_tune_two_groups")
    assert_same_values(ml.recorder.values, fa.recorder.values)  # the second fit's epoch
    assert_same_weights(ml, fa)
    frozen, lrs_frozen, unfrozen, lrs_unfrozen = ml_log
    assert frozen == fa_log[0] == [False, False, True, True, True, True]
    assert unfrozen == fa_log[2] == [True] * 6
    assert lrs_frozen == pytest.approx([float(v) for v in fa_log[1]], rel=1e-6)
    assert lrs_unfrozen == pytest.approx([float(v) for v in fa_log[3]], rel=1e-6)


def test_scripts_partial_lr_to_fp32_loss_not_reduced(fastai):
    """opt_func=partial(SGD, lr=0.05, mom=0.9) sets the lr fit() uses; to_fp16() then to_fp32() trains in
    full precision; learn.loss_not_reduced() gives one loss per item."""
    (ml, ours), (fa, theirs) = run_both("partial_lr_fp32")
    assert ours["lr"] == theirs["lr"] == 0.05
    assert not any("MixedPrecision" in type(cb).__name__ for cb in [*ml.cbs, *fa.cbs])
    assert_same_values(ours["values"], theirs["values"])
    assert_same_weights(ml, fa)
    assert ours["per_item"].shape == theirs["per_item"].shape == (32,)
    assert_same_tensor(ours["per_item"], torch.as_tensor(theirs["per_item"]).as_subclass(torch.Tensor))
    assert float(ours["mean"]) == pytest.approx(float(theirs["mean"]), abs=TOL)
    assert float(ours["per_item"].mean()) == pytest.approx(float(ours["mean"]), abs=TOL)


def test_scripts_short_epoch(fastai):
    """ShortEpochCallback(pct=0.3): 3 of 6 training batches per epoch in both, so the same weights.

    Deliberate difference (ShortEpochCallback's docstring): minilearn's runs last at after_batch
    (order 100), fastai's at order 0, before its Recorder; so fastai's Recorder never records the
    batch a phase ends on (2 losses per epoch instead of 3). The trained weights and the batch
    count are what must agree (the per-epoch rows: test_scripts_short_epoch_recorder_rows)."""
    ml, fa = run_both("short_epochs")
    assert_same_weights(ml, fa)
    assert ml.train_iter == fa.train_iter == 2 * 3
    assert len(ml.recorder.losses) == 2 * 3 and len(fa.recorder.losses) == 2 * 2
    # the first epoch's batches before the last one are recorded alike
    assert ml.recorder.losses[:2] == pytest.approx(flat(fa.recorder.losses[:2]), abs=TOL)


def test_difference_a_cancelled_phase_keeps_its_columns(fastai):
    """Documented difference: after a phase cancelled by ShortEpochCallback, fastai's Recorder row is empty;
    minilearn's keeps the short phase's numbers."""
    ml, fa = run_both("short_epochs")
    assert [len(r) for r in ml.recorder.values] == [3, 3] and [len(r) for r in fa.recorder.values] == [0, 0]


def test_scripts_fetch_preds(fastai):
    """FetchPredsCallback fetches the validation predictions after each validation of a fit, without
    disturbing the fit; callbacks that are not the Recorder or the bar see the fetch's batches, in both."""
    (ml, ours, ml_count), (fa, theirs, fa_count) = run_both("fetch_preds")
    assert_same_values(ml.recorder.values, fa.recorder.values)
    assert_same_weights(ml, fa)
    assert len(ours) == len(theirs) == 2
    for a, b, name in zip(ours, theirs, ("preds", "targs")):
        assert_same_tensor(a, b, name)
    assert ml_count == fa_count == 2 * (6 + 2 + 2)


def test_scripts_mc_dropout(fastai):
    """MCDropoutCallback: get_preds with dropout on gives a different sample each pass (compared by shape and
    behaviour, not value); without it get_preds is deterministic and fastai's; dropout is off afterwards."""
    (ml, ml_plain, ml_samples, ml_modes), (fa, fa_plain, fa_samples, fa_modes) = run_both("mc_dropout")
    assert_same_tensor(ml_plain[0], fa_plain[0], "preds without MC dropout")
    for plain, samples in ((ml_plain, ml_samples), (fa_plain, fa_samples)):
        assert torch.equal(plain[0], plain[1])
        assert samples.shape == (3, 32, 3)
        assert not torch.allclose(samples[0], samples[1]) and not torch.allclose(samples[0], plain[0])
        assert torch.allclose(samples.sum(-1), torch.ones(3, 32))  # still softmax probabilities
    assert ml_samples.shape == fa_samples.shape
    assert ml_modes == fa_modes and not any(ml_modes)


def test_scripts_collect_data(fastai):
    """CollectDataCallback keeps (xb, yb, pred, loss) of every batch, training and validation."""
    (ml, ours), (fa, theirs) = run_both("collect_data")
    assert len(ours) == len(theirs) == 6 + 2
    for i, ((xb, yb, pred, loss), (fxb, fyb, fpred, floss)) in enumerate(zip(ours, theirs)):
        assert isinstance(xb, tuple) and isinstance(yb, tuple) and len(xb) == len(fxb) == 1 and len(yb) == len(fyb)
        assert_same_tensor(xb[0], fxb[0], f"xb {i}")
        assert_same_tensor(yb[0], fyb[0], f"yb {i}")
        assert_same_tensor(pred, fpred, f"pred {i}")
        assert_same_tensor(loss, floss.as_subclass(torch.Tensor), f"loss {i}")
    assert_same_weights(ml, fa)


def test_scripts_model_resetter(fastai):
    """ModelResetter resets a stateful model before each phase and after the fit: fastai's numbers, and no
    state left after the fit."""
    ml, fa = run_both("reset_stateful")
    assert_same_values(ml.recorder.values, fa.recorder.values)
    assert_same_weights(ml, fa)
    assert ml.model.h is None and fa.model.h is None
    assert ml.model.resets >= 2 * 2 + 1


def test_scripts_fit_resets_a_stateful_model(fastai):
    ml, fa = run_both("refit_stateful")
    assert_same_values(ml.recorder.values, fa.recorder.values)  # the second fit's first batch differs
    assert ml.model.resets == fa.model.resets  # minilearn 0, fastai 2


def test_scripts_bn_freeze(fastai):
    """freeze() with train_bn=False and BnFreeze: the frozen body's BatchNorm keeps its statistics and
    weights while the head trains to fastai's weights."""
    (ml, ml_before, ml_after), (fa, fa_before, fa_after) = run_both("frozen_batchnorm")
    for before, after in ((ml_before, ml_after), (fa_before, fa_after)):
        assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert_same_values(ml.recorder.values, fa.recorder.values)
    assert_same_weights(ml, fa)
