"""Training control: clipping, accumulation, mixed precision, plateaus, CSV logs, resume, export."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from minilearn import (
    SGD, Callback, CSVLogger, DataLoaders, GradientAccumulation, GradientClip, Learner, MixedPrecision,
    ReduceLROnPlateau, SaveModelCallback, load_learner,
)
from synthetic import class_data, class_learner, linear_data



def test_gradient_clip_bounds_the_norm():
    norms = []

    class Spy(Callback):
        order = GradientClip.order + 1

        def before_step(self):
            norms.append(torch.stack([p.grad.norm() for p in self.model.parameters()]).norm().item())

    learn = class_learner()
    learn.lr = 10.0  # big steps, big gradients
    with learn.no_logging():
        learn.fit(2, cbs=[GradientClip(max_norm=0.5), Spy()])
    assert norms and max(norms) <= 0.5 + 1e-5
    with pytest.raises(ValueError, match="max_norm"):
        GradientClip(0)


def test_gradient_accumulation_equals_the_bigger_batch():
    x, y, vx, vy = linear_data(n=64, n_valid=16)

    def run(bs, cbs):
        torch.manual_seed(0)
        learn = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=bs, shuffle=False), nn.Linear(3, 1), nn.MSELoss(),
                        opt_func=SGD, lr=0.1)
        with learn.no_logging():
            learn.fit(2, cbs=cbs)
        return learn

    big = run(32, None)
    steps = []

    class CountSteps(Callback):
        def after_step(self):
            steps.append(self.iter)

    acc = run(16, [GradientAccumulation(n_acc=32), CountSteps()])
    assert steps == [1, 3, 1, 3]
    for a, b in zip(big.model.parameters(), acc.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert acc.recorder.values[-1][1] == pytest.approx(big.recorder.values[-1][1], rel=1e-5)
    with pytest.raises(ValueError, match="n_acc"):
        GradientAccumulation(0)


def test_mixed_precision_bf16_on_cpu_and_no_autocast_leak():
    learn = class_learner()
    dtypes = []

    class Spy(Callback):
        order = MixedPrecision.order + 1

        def after_pred(self):
            dtypes.append((torch.is_autocast_enabled("cpu"), self.pred.dtype))

    with learn.no_logging():
        learn.fit(2, cbs=[MixedPrecision(), Spy()])
    assert all(on for on, _ in dtypes) and all(dt == torch.float32 for _, dt in dtypes)
    assert learn.recorder.column("accuracy")[-1] > 0.8
    assert not torch.is_autocast_enabled("cpu")

    class Boom(Callback):
        order = MixedPrecision.order + 1

        def after_pred(self):
            raise RuntimeError("mid-batch")

    with learn.no_logging(), pytest.raises(RuntimeError, match="mid-batch"):
        learn.fit(1, cbs=[MixedPrecision(), Boom()])
    assert not torch.is_autocast_enabled("cpu")  # cleanup_fit switched it off
    with pytest.raises(ValueError, match="dtype"):
        MixedPrecision(dtype=torch.float64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_fp16_with_grad_scaler_on_cuda():
    learn = class_learner()
    learn.model.cuda()
    with learn.no_logging():
        learn.fit(3, cbs=MixedPrecision())
    assert learn.recorder.column("accuracy")[-1] > 0.8
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())


def test_reduce_lr_on_plateau():
    learn = class_learner()
    seen = []

    class Flat(Callback):
        order = 50  # before the plateau tracker, after nothing: the recorder fills the log
        def after_epoch(self):
            seen.append(self.opt.hypers[-1]["lr"])

    with learn.no_logging():
        learn.fit(6, cbs=[ReduceLROnPlateau(monitor="accuracy", patience=1, factor=10, min_delta=2.0), Flat()])
    # accuracy can never improve by 2.0, so every epoch after the first counts as a plateau
    assert learn.opt.hypers[-1]["lr"] == pytest.approx(0.1 / 10**5)
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(factor=1)


def test_csv_logger_writes_numbers_and_appends(tmp_path):
    learn = class_learner(tmp_path)
    logger = CSVLogger("logs/history.csv")
    with learn.no_logging():
        learn.fit(2, cbs=logger)
    rows = logger.read_log()
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[1]["accuracy"] == pytest.approx(learn.recorder.values[1][2])
    assert isinstance(rows[0]["time"], float)
    with learn.no_logging():
        learn.fit(1, cbs=CSVLogger("logs/history.csv", append=True))
    text = (tmp_path / "logs" / "history.csv").read_text().splitlines()
    assert len(text) == 4 and text[0].startswith("epoch,train_loss,valid_loss,accuracy,time")


def test_resumed_run_ends_with_the_same_weights(tmp_path):
    """Interrupted after epoch 1, resumed from its checkpoint in a new Learner: bit for bit the same."""
    whole = class_learner(tmp_path / "a", dropout=0.2)
    with whole.no_logging():
        whole.fit_one_cycle(4, 0.1)

    class Interrupt(Callback):
        def before_epoch(self):
            if self.epoch == 2:
                raise KeyboardInterrupt()

    first = class_learner(tmp_path / "b", dropout=0.2)
    with first.no_logging(), pytest.raises(KeyboardInterrupt):
        first.fit_one_cycle(4, 0.1, cbs=[SaveModelCallback(every_epoch=True, with_opt=True, fname="ckpt"), Interrupt()])

    torch.manual_seed(999)  # the new process's RNGs are elsewhere: the checkpoint puts them back
    resumed = class_learner(tmp_path / "b", dropout=0.2, seed=0)
    resumed.load("ckpt_1", with_rng=True)
    assert resumed.epoch == 1
    with resumed.no_logging():
        resumed.fit_one_cycle(4, 0.1, start_epoch=2)
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    assert [r["epoch"] for r in resumed.recorder.history] == [2, 3]


def test_start_epoch_is_checked():
    learn = class_learner()
    with pytest.raises(ValueError, match="start_epoch"):
        learn.fit(2, start_epoch=3)


def test_export_and_load_learner(tmp_path):
    learn = class_learner(tmp_path)
    with learn.no_logging():
        learn.fit(1)
    x = learn.dls.valid_ds[0]
    path = learn.export("model.pth")
    inf = load_learner(path)
    assert torch.allclose(inf.predict(x), learn.predict(x))
    assert inf.predict(x[0]).shape == (3,) and learn.predict(x[:5]).shape == (5, 3)
    with pytest.raises(ValueError, match="x"):
        inf.predict(x[None])


def test_export_of_a_custom_model_needs_its_class(tmp_path):
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x) * 2

    x, y, vx, vy = class_data()
    torch.manual_seed(0)
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy), Custom(), nn.CrossEntropyLoss(), path=tmp_path)
    path = learn.export()
    with pytest.raises(ValueError, match="model=YourModel"):
        load_learner(path)
    inf = load_learner(path, model=Custom())
    assert torch.allclose(inf.predict(vx), learn.predict(vx))
    with pytest.raises(ValueError, match="not a minilearn export"):
        load_learner(learn.save("ckpt"))


def test_mixed_precision_in_validation_before_any_fit_and_after_an_error():
    learn = class_learner()
    learn.add_cb(MixedPrecision())
    loss, acc = learn.validate()
    assert loss is not None and not torch.is_autocast_enabled("cpu")

    class Boom(Callback):
        order = MixedPrecision.order + 1

        def after_pred(self):
            raise RuntimeError("in validation")

    with pytest.raises(RuntimeError, match="in validation"):
        learn.validate(cbs=Boom())
    assert not torch.is_autocast_enabled("cpu")


def test_save_model_does_not_load_an_earlier_fits_file(tmp_path):
    learn = class_learner(tmp_path)
    sm = learn.add_cb(SaveModelCallback(fname="best"))
    with learn.no_logging():
        learn.fit(1)
        after_first = [p.detach().clone() for p in learn.model.parameters()]
        learn.fit(2)   # improves and saves again
        learn.fit(3, start_epoch=3)  # no epoch runs, nothing saved: nothing to load
    assert sm.saved_epochs == [] and sm.last_saved_path is None
    assert not all(torch.equal(a, b) for a, b in zip(after_first, learn.model.parameters()))


def test_load_to_a_device_and_start_epoch_checks(tmp_path):
    learn = class_learner(tmp_path)
    with learn.no_logging():
        learn.fit(1)
    learn.save("c")
    learn.load("c", with_rng=True, device="cpu")
    assert next(learn.model.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="start_epoch"):
        learn.fit(2, start_epoch=True)


def test_checkpoint_files_get_a_normal_mode(tmp_path):
    import os
    import stat

    learn = class_learner(tmp_path)
    mask = os.umask(0o022)
    try:
        path = learn.save("c")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_terminate_on_nan_runs_after_the_distributed_loss_sync():
    from minilearn import DistributedTrainer, TerminateOnNaNCallback

    assert TerminateOnNaNCallback.order > DistributedTrainer.order


def test_malformed_export_files_get_a_clear_error(tmp_path):
    from minilearn.checkpoint import load_checkpoint, save_checkpoint

    learn = class_learner(tmp_path)
    path = learn.export("m.pth")
    ckpt = load_checkpoint(path)
    assert set(ckpt) == {"format", "version", "state_dict", "architecture", "item_ndim"}
    for broken in ({**ckpt, "version": 99}, {k: v for k, v in ckpt.items() if k != "state_dict"},
                   {k: v for k, v in ckpt.items() if k != "item_ndim"}):
        save_checkpoint(broken, tmp_path / "bad.pth")
        with pytest.raises(ValueError, match="unknown version or incomplete"):
            load_learner(tmp_path / "bad.pth")
    wrong = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.0), nn.Linear(16, 2))
    with pytest.raises(ValueError, match="shapes differ"):
        load_learner(path, model=wrong)
