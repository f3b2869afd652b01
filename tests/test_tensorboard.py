"""TensorBoardCallback: what it writes, read back with tensorboard's own reader.

Run under torchrun (`torchrun --nproc_per_node 2 tests/test_tensorboard.py OUT`), this file is also
the worker of the two-process test: each rank fits a small learner with the callback under OUT.
"""

from __future__ import annotations

import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from minilearn import Callback, DataLoaders, Learner, SGD, accuracy  # noqa: E402
from minilearn.callbacks.tensorboard import PREDS_TAG, TensorBoardCallback, is_image_batch  # noqa: E402
from minilearn.losses import CrossEntropyLossFlat  # noqa: E402
from synthetic import class_learner, finder_learner  # noqa: E402

N_BATCHES = 6  # class_learner: 96 training items in batches of 16


def read_events(run_dir: Path) -> EventAccumulator:
    """Every event under `run_dir`, nothing sampled away (size 0 keeps all)."""
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def points(ea: EventAccumulator, tag: str) -> tuple[list[int], list[float]]:
    events = ea.Scalars(tag)
    return [e.step for e in events], [e.value for e in events]


def open_writers() -> list:
    """tensorboard's event-file writers still open in this process: each runs a thread until it is
    closed (tensorboard's own file object opens the file for each write, so an unclosed writer
    shows as its thread, not as a file descriptor)."""
    return [t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread" and t.is_alive()]


def fit(learn: Learner, n_epoch: int = 2, one_cycle: bool = False, **kwargs) -> TensorBoardCallback:
    cb = TensorBoardCallback(log_dir="tb", **kwargs)
    with learn.no_logging():
        (learn.fit_one_cycle if one_cycle else learn.fit)(n_epoch, 0.1, cbs=cb)
    return cb


def image_learner(tmp_path, n: int = 48, n_valid: int = 16, shape=(1, 8, 8), **kwargs) -> Learner:
    """A linear classifier of images (normalised: values outside [0, 1]) into 3 named classes,
    with fastai's flat loss."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + n_valid, *shape, generator=g)
    y = torch.randint(0, 3, (n + n_valid,), generator=g)
    dls = DataLoaders.from_tensors(x[:n], y[:n], x[n:], y[n:], bs=16, seed=0, vocab=["cat", "dog", "owl"])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 3))
    return Learner(dls, model, CrossEntropyLossFlat(), opt_func=SGD, metrics=accuracy, path=tmp_path, **kwargs)


# ---------------------------------------------------------------- per batch
def test_train_loss_per_batch_is_the_recorders_smoothed_loss_at_fastais_steps(tmp_path):
    learn = class_learner(tmp_path)
    cb = fit(learn, 2)
    assert cb.run_dir == tmp_path / "tb"
    ea = read_events(cb.run_dir)
    steps, values = points(ea, "train_loss")
    assert len(steps) == 2 * N_BATCHES == len(learn.recorder.losses)
    assert steps == list(range(1, 2 * N_BATCHES + 1))  # fastai's: train_iter after the batch
    assert values == pytest.approx(learn.recorder.losses, abs=1e-6)
    walls = [e.wall_time for e in ea.Scalars("train_loss")]
    assert walls == sorted(walls) and walls[0] < walls[-1]  # each point keeps its batch's own time


def test_hypers_of_every_group_per_batch_under_fit_one_cycle(tmp_path):
    learn = class_learner(tmp_path, splitter=lambda m: [list(m[0].parameters()), list(m[3].parameters())])
    cb = fit(learn, 2, one_cycle=True)
    ea = read_events(cb.run_dir)
    assert {"lr_0", "lr_1", "mom_0", "mom_1", "wd_0", "wd_1"} <= set(ea.Tags()["scalars"])  # fastai's tags
    steps, lrs = points(ea, "lr_1")
    assert steps == list(range(1, 2 * N_BATCHES + 1))
    assert lrs == pytest.approx(learn.recorder.lrs, rel=1e-6)  # the Recorder keeps the last group's
    assert points(ea, "mom_1")[1] == pytest.approx(learn.recorder.hps["mom"], rel=1e-6)
    assert lrs[0] == pytest.approx(0.1 / 25, rel=1e-6) and max(lrs) == pytest.approx(0.1, rel=1e-3)
    assert points(ea, "lr_0")[1] == pytest.approx(lrs, rel=1e-6)  # one lr_max for both groups


def test_every_keeps_one_batch_point_in_every(tmp_path):
    learn = class_learner(tmp_path)
    cb = fit(learn, 2, every=4)
    ea = read_events(cb.run_dir)
    steps, values = points(ea, "train_loss")
    assert steps == [4, 8, 12]
    assert values == pytest.approx([learn.recorder.losses[s - 1] for s in steps], abs=1e-6)
    assert points(ea, "lr_0")[0] == [4, 8, 12]
    assert points(ea, "valid_loss")[0] == [6, 12]  # epochs are always written


# ---------------------------------------------------------------- per epoch
def test_valid_loss_and_metrics_per_epoch_match_the_recorder_by_name(tmp_path):
    learn = class_learner(tmp_path)
    cb = fit(learn, 3)
    ea = read_events(cb.run_dir)
    for name in ("valid_loss", "accuracy"):
        steps, values = points(ea, name)
        assert steps == [N_BATCHES, 2 * N_BATCHES, 3 * N_BATCHES]  # the epoch's last training step
        assert values == pytest.approx(learn.recorder.column(name), abs=1e-6)
    assert not {"epoch", "time"} & set(ea.Tags()["scalars"])


def test_train_metrics_are_written_under_their_column_names(tmp_path):
    from minilearn import Recorder
    from minilearn.callback import TrainEvalCallback

    learn = class_learner(tmp_path, default_cbs=False,
                          cbs=[TrainEvalCallback(), Recorder(train_metrics=True, add_time=False)])
    cb = fit(learn, 2)
    ea = read_events(cb.run_dir)
    assert points(ea, "train_accuracy")[1] == pytest.approx(learn.recorder.column("train_accuracy"), abs=1e-6)
    # the last metric too, which fastai's slice [2:-1] loses when there is no time column
    assert points(ea, "accuracy")[1] == pytest.approx(learn.recorder.column("accuracy"), abs=1e-6)


def test_hist_weights_writes_a_histogram_per_parameter_per_epoch(tmp_path):
    learn = class_learner(tmp_path)
    cb = fit(learn, 2, hist_weights=True)
    ea = read_events(cb.run_dir)
    names = [n for n, _ in learn.model.named_parameters()]
    assert sorted(ea.Tags()["histograms"]) == sorted(f"weights/{n}" for n in names)
    hist = ea.Histograms("weights/3.weight")
    assert [h.step for h in hist] == [N_BATCHES, 2 * N_BATCHES]
    last = hist[-1].histogram_value
    w = learn.model[3].weight.detach()
    assert last.num == w.numel()
    assert (last.min, last.max) == pytest.approx((w.min().item(), w.max().item()))


# ---------------------------------------------------------------- graph and predictions
def test_trace_model_writes_the_graph_and_leaves_training_as_it_was(tmp_path):
    plain = class_learner(tmp_path, dropout=0.5)
    with plain.no_logging():
        plain.fit(2, 0.1)
    learn = class_learner(tmp_path, dropout=0.5)
    cb = fit(learn, 2, trace_model=True, hist_weights=True)
    ea = read_events(cb.run_dir)
    assert ea.Tags()["graph"]
    ops = {node.op for node in ea.Graph().node}
    assert any("linear" in op.lower() for op in ops), ops
    assert learn.recorder.values == plain.recorder.values  # no RNG draw, no change of order or mode
    assert learn.recorder.losses == plain.recorder.losses
    assert not learn.model.training  # left in eval by the last validation, as without the callback


def test_trace_model_under_mixed_precision(tmp_path):
    learn = class_learner(tmp_path).to_bf16()  # fastai refuses to trace in mixed precision
    cb = fit(learn, 1, trace_model=True)
    assert read_events(cb.run_dir).Tags()["graph"]
    assert len(learn.recorder.values) == 1


def test_trace_model_failure_names_the_argument_and_closes_the_file(tmp_path):
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x), "not a tensor"  # torch.jit.trace takes tensor outputs only

    learn = class_learner(tmp_path)
    learn.model = Untraceable()
    learn.create_opt()
    with pytest.raises(RuntimeError, match="trace_model"):
        fit(learn, 1, trace_model=True)
    assert open_writers() == []


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 8, 8), (8, 8, 3), (8, 8)])
def test_log_preds_writes_a_figure_of_predictions_for_images(tmp_path, shape):
    learn = image_learner(tmp_path, shape=shape)
    cb = fit(learn, 2, log_preds=True, n_preds=4)
    ea = read_events(cb.run_dir)
    assert PREDS_TAG in ea.Tags()["images"]
    images = ea.Images(PREDS_TAG)
    assert [im.step for im in images] == [3, 6]
    assert images[0].width > 100 and images[0].height > 100 and images[0].encoded_image_string[:4] == b"\x89PNG"


def test_log_preds_for_non_images_warns_once_and_logs_none(tmp_path):
    learn = class_learner(tmp_path)  # inputs (N, 4): not images
    with pytest.warns(UserWarning, match="log_preds: the inputs") as record:
        cb = fit(learn, 2, log_preds=True)
    assert len([w for w in record if "log_preds" in str(w.message)]) == 1
    ea = read_events(cb.run_dir)
    assert ea.Tags()["images"] == [] and len(points(ea, "train_loss")[0]) == 2 * N_BATCHES


def test_is_image_batch():
    assert is_image_batch(torch.zeros(2, 3, 8, 8)) and is_image_batch(torch.zeros(2, 8, 8, 1))
    assert is_image_batch(torch.zeros(2, 28, 28)) and is_image_batch(torch.zeros(2, 1, 5, 5, dtype=torch.uint8))
    assert not is_image_batch(torch.zeros(2, 784)) and not is_image_batch(torch.zeros(2, 10, 5, 7))
    assert not is_image_batch(torch.zeros(2, 3, 8, 8, dtype=torch.int64)) and not is_image_batch([1, 2])


# ---------------------------------------------------------------- the file's life
def test_the_writer_is_closed_after_a_fit_that_raised_with_the_epochs_so_far_readable(tmp_path):
    class Boom(Callback):
        def before_batch(self):
            if self.epoch == 1 and self.iter == 2:
                self.writers_open = len(open_writers())
                raise ValueError("boom")

    learn = class_learner(tmp_path)
    cb = TensorBoardCallback(log_dir="tb")
    boom = Boom()
    with learn.no_logging(), pytest.raises(ValueError, match="boom"):
        learn.fit(3, 0.1, cbs=[cb, boom])
    assert boom.writers_open == 1 and cb.writer is None
    assert open_writers() == []
    ea = read_events(tmp_path / "tb")
    assert points(ea, "valid_loss")[0] == [N_BATCHES]  # epoch 0 is there
    steps, values = points(ea, "train_loss")  # and the two batches of epoch 1 that ran, written at cleanup
    assert steps == list(range(1, N_BATCHES + 3))
    assert values == pytest.approx(learn.recorder.losses, abs=1e-6)


def test_after_a_fit_the_writer_is_closed_and_a_second_fit_adds_a_file(tmp_path):
    learn = class_learner(tmp_path)
    cb = TensorBoardCallback(log_dir=tmp_path / "abs")
    with learn.no_logging():
        learn.fit(1, cbs=cb)
        assert open_writers() == []
        learn.fit(1, cbs=cb)
    assert len(list((tmp_path / "abs").glob("events.out.tfevents.*"))) == 2
    assert points(read_events(tmp_path / "abs"), "valid_loss")[0] == [N_BATCHES, N_BATCHES]


def test_default_log_dir_is_a_new_run_under_learn_path_each_fit(tmp_path):
    learn = class_learner(tmp_path)
    cb = TensorBoardCallback()
    runs = []
    with learn.no_logging():
        for _ in range(2):
            learn.fit(1, cbs=cb)
            runs.append(cb.run_dir)
    assert runs[0] != runs[1] and all(r.parent == tmp_path / "runs" for r in runs)
    assert all(len(points(read_events(r), "train_loss")[0]) == N_BATCHES for r in runs)


def test_nothing_is_written_by_lr_find_validate_or_get_preds(tmp_path):
    learn = finder_learner()
    learn.path = tmp_path
    cb = learn.add_cb(TensorBoardCallback())
    with learn.no_logging():
        learn.lr_find(num_it=10, show_plot=False)
        learn.validate()
        learn.get_preds()
    assert not (tmp_path / "runs").exists() and cb.run_dir is None
    with learn.no_logging():
        learn.fit(1)
    assert len(points(read_events(cb.run_dir), "valid_loss")[0]) == 1


def test_a_validate_in_the_middle_of_a_fit_adds_nothing(tmp_path):
    class ValidateEachEpoch(Callback):
        order = 70

        def after_epoch(self):
            self.learn.validate()

    learn = class_learner(tmp_path)
    cb = TensorBoardCallback(log_dir="tb")
    with learn.no_logging():
        learn.fit(2, 0.1, cbs=[cb, ValidateEachEpoch()])
    ea = read_events(cb.run_dir)
    assert points(ea, "valid_loss")[0] == [N_BATCHES, 2 * N_BATCHES]
    assert len(points(ea, "train_loss")[0]) == 2 * N_BATCHES


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # without a process group, is_rank0 reads torchrun's RANK
    learn = class_learner(tmp_path)
    cb = fit(learn, 1)
    assert cb.run_dir is None and not (tmp_path / "tb").exists()


def test_runs_after_the_recorder():
    learn = class_learner()
    cb = learn.add_cb(TensorBoardCallback())
    names = [type(c).__name__ for c in learn.cbs]
    assert names.index("Recorder") < names.index("TensorBoardCallback")
    assert "TensorBoardCallback" not in [type(c).__name__ for c in learn.ordered_cbs("before_validate")]
    assert cb.sits_out == ("lr_find", "validate")


# ---------------------------------------------------------------- clear errors
def test_missing_tensorboard_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were absent
    with pytest.raises(ImportError, match=r'pip install "minilearn\[tensorboard\]"'):
        TensorBoardCallback()


@pytest.mark.parametrize("kwargs, match", [
    ({"log_dir": 3}, "log_dir"), ({"trace_model": 1}, "trace_model"), ({"log_preds": "yes"}, "log_preds"),
    ({"n_preds": 0}, "n_preds"), ({"hist_weights": None}, "hist_weights"), ({"every": 0}, "every"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        TensorBoardCallback(**kwargs)


def test_without_a_recorder_the_fit_stops_before_training(tmp_path):
    learn = class_learner(tmp_path, default_cbs=False)
    with pytest.raises(RuntimeError, match="no Recorder"):
        learn.fit(1, cbs=TensorBoardCallback(log_dir="tb"))
    assert learn.train_iter == 0


# ---------------------------------------------------------------- two processes
def test_under_torchrun_only_rank_0_writes(tmp_path):
    from test_distributed_trainer import torchrun

    proc, _ = torchrun(Path(__file__), str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0", "rank1"]  # both ranks trained
    assert not (tmp_path / "rank1" / "tb").exists()
    ea = read_events(tmp_path / "rank0" / "tb")
    steps, _ = points(ea, "train_loss")
    assert steps == list(range(1, 2 * 3 + 1))  # 96 items in global batches of 32, 2 epochs
    assert ea.Tags()["images"] == [] and ea.Tags()["graph"]


def _torchrun_worker(out: Path) -> None:
    """Each rank: a fit with the callback (graph traced on rank 0 alone, on the unwrapped model)."""
    from minilearn.callbacks.distributed import distrib_ctx
    from minilearn.distributed import rank_distrib

    run = out / f"rank{rank_distrib()}"
    run.mkdir(parents=True)
    learn = class_learner(run, bs=32)
    with distrib_ctx(learn), learn.no_logging():
        learn.fit(2, 0.1, cbs=TensorBoardCallback(log_dir="tb", trace_model=True))


if __name__ == "__main__":
    warnings.simplefilter("ignore", FutureWarning)
    _torchrun_worker(Path(sys.argv[1]))
