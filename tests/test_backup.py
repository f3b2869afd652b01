"""BackupCallback and the callback state protocol: a run killed anywhere and started again ends as if
it had never stopped.

The in-process tests end a fit with an exception at chosen moments and fit a fresh learner again;
the subprocess tests kill `tests/backup_worker.py` with SIGKILL (at seeded random moments and at
moments the worker picks: half-way through writing each file, between the CSV row and the backup,
before the backup is removed) and run it again until it finishes, one process and two (torchrun).
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from minilearn import (
    BackupCallback, Callback, CrossEntropyLossFlat, CSVLogger, DataLoaders, EarlyStoppingCallback,
    GradientAccumulation, Learner, MixedPrecision, ParamScheduler, Recorder, ReduceLROnPlateau, SaveModelCallback,
    SchedLin, accuracy, datasets, set_seed,
)
from minilearn.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "backup_worker.py"


class Crash(Exception):
    """The fault of the in-process tests."""


class CrashAt(Callback):
    """Raises Crash after training batch `batch` of `epoch`, or at the end of `epoch` (batch None)."""

    order = 105  # after every callback but the backup

    def __init__(self, epoch: int, batch: int | None = None, exc: type[BaseException] = Crash):
        super().__init__()
        self.at, self.exc = (epoch, batch), exc

    def after_batch(self) -> None:
        if self.learn.training and (self.learn.epoch, self.learn.iter) == self.at:
            raise self.exc()

    def after_epoch(self) -> None:
        if (self.learn.epoch, None) == self.at:
            raise self.exc()


def make_learner(path: Path, every_n_batches=None, extra=(), n_acc=None) -> Learner:
    """The same run every time: data, order, weights and dropout from one seed."""
    set_seed(0)
    x, y = datasets.synthetic_classification(260, 8, 3, seed=0)
    dls = DataLoaders.from_tensors(x[:200], y[:200], x[200:], y[200:], bs=16, seed=0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))
    cbs = [CSVLogger(), SaveModelCallback(), EarlyStoppingCallback(patience=3),
           ReduceLROnPlateau(patience=1, factor=2), BackupCallback(every_n_batches=every_n_batches), *extra]
    if n_acc:
        cbs.append(GradientAccumulation(n_acc))
    return Learner(dls, model, CrossEntropyLossFlat(), metrics=accuracy, path=path, cbs=cbs)


def fit(learn: Learner, n_epoch: int = 6) -> None:
    with learn.no_logging():
        learn.fit_one_cycle(n_epoch, 3e-2)


def outcome(learn: Learner) -> dict:
    """What a run ends with: weights, table (without times), per-batch losses and lrs, CSV rows, best file."""
    csv = (learn.path / "history.csv").read_text().splitlines()
    return {"weights": {k: v.clone() for k, v in learn.model.state_dict().items()},
            "table": [{k: v for k, v in row.items() if k != "time"} for row in learn.recorder.history],
            "losses": learn.recorder.losses, "lrs": learn.recorder.lrs, "hps": learn.recorder.hps,
            "csv": [row.rsplit(",", 1)[0] for row in csv],
            "best": load_checkpoint(learn.checkpoint_path("model"))["model"]}


def assert_same(a: dict, b: dict) -> None:
    for key in ("weights", "best"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}: {name} differs"
    for key in ("table", "losses", "lrs", "hps", "csv"):
        assert a[key] == b[key], f"{key} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run (epoch-end backups: written, never read)."""
    learn = make_learner(tmp_path_factory.mktemp("reference"))
    fit(learn)
    assert not learn.checkpoint_path("backup").exists()
    return outcome(learn)


# ---------------------------------------------------------------- in-process: an exception, then a fresh run
def expected_resume(epoch: int, batch: int | None, every: int | None, n_iter: int = 13):
    """Where a fit resumes after a crash at (epoch, batch): after the last backup written before it."""
    # the training batches whose backups were written (CrashAt runs before the backup does)
    done = epoch * n_iter + (n_iter if batch is None else batch)
    mids = [t for t in range(epoch * n_iter + 1, done + 1) if every and t % every == 0]
    if mids:
        return epoch, mids[-1] - epoch * n_iter
    return (epoch, None) if epoch > 0 else None


@pytest.mark.parametrize("at, every", [((0, None), None), ((2, None), None), ((5, None), None), ((3, 5), None),
                                       ((3, 5), 4), ((0, 11), 4), ((4, 12), 13), ((1, 0), 1)])
def test_a_run_that_failed_and_is_run_again_ends_as_the_uninterrupted_one(tmp_path, reference, at, every):
    learn = make_learner(tmp_path, every, extra=[CrashAt(*at)])
    with pytest.raises(Crash):
        fit(learn)
    # a fit that raised keeps its backup (none before the first was written)
    assert learn.checkpoint_path("backup").exists() == (expected_resume(*at, every) is not None)
    again = make_learner(tmp_path, every)
    fit(again)
    assert_same(outcome(again), reference)
    assert not again.checkpoint_path("backup").exists()  # removed once the fit has ended
    assert again.backup.resumed_from == expected_resume(*at, every)


def test_mid_epoch_backups_change_no_number(tmp_path, reference):
    learn = make_learner(tmp_path, every_n_batches=3)
    fit(learn)
    assert_same(outcome(learn), reference)


def test_gradient_accumulation_resumes_with_the_gradients_it_had_gathered(tmp_path):
    ref_learn = make_learner(tmp_path / "ref", n_acc=40)
    fit(ref_learn, 3)
    learn = make_learner(tmp_path / "run", 2, extra=[CrashAt(1, 7)], n_acc=40)
    with pytest.raises(Crash):
        fit(learn, 3)
    saved = load_checkpoint(learn.checkpoint_path("backup"))["cbs"]["gradient_accumulation"]
    assert saved["count"] == 32 and any(g is not None and g.abs().sum() > 0 for g in saved["grads"])
    again = make_learner(tmp_path / "run", 2, n_acc=40)
    fit(again, 3)
    assert again.backup.resumed_from == expected_resume(1, 7, 2) == (1, 7)
    assert_same(outcome(again), outcome(ref_learn))


def test_the_same_learner_fitted_again_after_a_failure_resumes(tmp_path, reference):
    learn = make_learner(tmp_path, 5, extra=[CrashAt(2, 7)])
    with pytest.raises(Crash):
        fit(learn)
    learn.remove_cb(CrashAt)
    fit(learn)  # in a notebook: the same learner, fit again
    assert learn.backup.resumed_from == expected_resume(2, 7, 5) == (2, 4)
    assert_same(outcome(learn), reference)


def test_ctrl_c_keeps_the_backup_and_the_next_run_resumes(tmp_path, reference):
    learn = make_learner(tmp_path, extra=[CrashAt(2, exc=KeyboardInterrupt)])
    with pytest.raises(KeyboardInterrupt):
        fit(learn)
    again = make_learner(tmp_path)
    fit(again)
    assert again.backup.resumed_from == (2, None)  # after the backup of epoch 1, the last written
    assert_same(outcome(again), reference)


def test_early_stopping_ends_the_fit_and_removes_the_backup(tmp_path):
    class Worse(Callback):  # valid_loss rises every epoch from epoch 1 on: patience 3 stops at epoch 4
        order = 55
        def after_epoch(self):
            self.learn.recorder.values[-1][1] = float(self.learn.epoch)
    learn = make_learner(tmp_path, extra=[Worse()])
    fit(learn, 8)
    assert learn.early_stopping.stopped_epoch == 3 and len(learn.recorder.history) == 4
    assert not learn.checkpoint_path("backup").exists()


def test_a_resumed_tracker_keeps_its_best(tmp_path):
    learn = make_learner(tmp_path, extra=[CrashAt(3)])
    with pytest.raises(Crash):
        fit(learn)
    best, saved = learn.save_model.best, list(learn.save_model.saved_epochs)
    again = make_learner(tmp_path, extra=[CrashAt(4)])
    with pytest.raises(Crash):
        fit(again)
    assert again.backup.resumed_from == (3, None)  # after the backup of epoch 2, the last written
    assert again.save_model.saved_epochs[:len(saved)] == saved
    assert again.save_model.best <= best


def test_several_fits_resume_the_one_that_was_interrupted(tmp_path):
    def script(crash_second: bool):
        learn = make_learner(tmp_path)
        fit(learn, 2)  # the first fit: ends normally
        with learn.added_cbs([CrashAt(1)] if crash_second else []):
            if crash_second:
                with pytest.raises(Crash):
                    fit(learn, 3)
            else:
                fit(learn, 3)
        return learn
    ref = make_learner(tmp_path / "ref")
    fit(ref, 2)
    fit(ref, 3)
    script(crash_second=True)
    assert load_checkpoint(tmp_path / "models" / "backup.pth")["fit_index"] == 1
    again = script(crash_second=False)
    assert again.backup.resumed_from == (1, None)  # in the second fit
    assert torch.equal(again.model[0].weight, ref.model[0].weight)


def test_the_lr_finder_writes_no_backup(tmp_path):
    learn = make_learner(tmp_path)
    with learn.no_logging():
        learn.lr_find(num_it=20, show_plot=False)
    assert not learn.checkpoint_path("backup").exists()


# ---------------------------------------------------------------- a backup that does not fit
def _leave_backup(path: Path, n_epoch: int = 6) -> Learner:
    learn = make_learner(path, extra=[CrashAt(1)])
    with pytest.raises(Crash):
        fit(learn, n_epoch)
    return learn


def test_a_backup_of_another_fit_is_refused_naming_the_file(tmp_path):
    _leave_backup(tmp_path)
    learn = make_learner(tmp_path)
    with pytest.raises(ValueError, match=r"backup .*backup\.pth: it is of a fit with n_epoch 6, this fit has 4"):
        fit(learn, 4)
    assert torch.equal(learn.model[0].weight, make_learner(tmp_path / "x").model[0].weight)  # nothing changed


def test_a_backup_of_another_model_is_refused(tmp_path):
    _leave_backup(tmp_path)
    learn = make_learner(tmp_path)
    learn.model[3] = nn.Linear(32, 3, bias=False)
    with pytest.raises(ValueError, match="weights do not fit the model"):
        fit(learn)


def test_a_backup_with_other_callbacks_is_refused(tmp_path):
    _leave_backup(tmp_path)
    learn = make_learner(tmp_path)
    learn.remove_cb(learn.csv_logger)
    with pytest.raises(ValueError, match="stateful callbacks"):
        fit(learn)


@pytest.mark.parametrize("damage", ["truncate", "flip", "text"])
def test_a_damaged_backup_is_an_error_naming_it(tmp_path, damage):
    path = _leave_backup(tmp_path).checkpoint_path("backup")
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    else:
        path.write_text("not a backup")
    with pytest.raises(ValueError, match="backup.pth"):
        fit(make_learner(tmp_path))


def test_a_checkpoint_is_not_taken_for_a_backup(tmp_path):
    learn = make_learner(tmp_path)
    learn.save("backup")
    with pytest.raises(ValueError, match="not a minilearn backup"):
        fit(learn)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="fname"):
        BackupCallback(fname="")
    for bad in (0, -1, 2.5, "5", True):
        with pytest.raises((TypeError, ValueError), match="every_n_batches"):
            BackupCallback(every_n_batches=bad)


def test_mid_epoch_backups_refuse_a_torch_loader(tmp_path):
    x, y = datasets.synthetic_classification(64, 8, 3, seed=0)
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
    learn = Learner(DataLoaders(dl), nn.Linear(8, 3), CrossEntropyLossFlat(), path=tmp_path,
                    cbs=BackupCallback(every_n_batches=2))
    with pytest.raises(ValueError, match="every_n_batches: mid-epoch backups need minilearn's own DataLoader"):
        learn.fit(1)


# ---------------------------------------------------------------- the state protocol, callback by callback
def test_callbacks_without_run_state_keep_nothing():
    assert Callback().state_dict() == {}
    assert BackupCallback().state_dict() == {}


def test_state_dicts_round_trip_through_a_file_read_with_weights_only(tmp_path):
    class Snapshot(CrashAt):  # every callback's state_dict() at the crash, before the fit's cleanup
        def after_batch(self):
            if self.learn.training and (self.learn.epoch, self.learn.iter) == self.at:
                self.learn.snapshot = {cb.name: cb.state_dict() for cb in self.learn.cbs}
                self.learn.grads = [p.grad.clone() for p in self.learn.model.parameters()]
            super().after_batch()

    def learner(path):
        return make_learner(path, extra=[ParamScheduler({"lr": SchedLin(1e-3, 1e-2)}, strict=False)], n_acc=40)
    learn = learner(tmp_path)
    with pytest.raises(Crash), learn.no_logging():
        learn.fit(2, cbs=Snapshot(1, 3))
    torch.save(learn.snapshot, tmp_path / "states.pth")
    loaded = torch.load(tmp_path / "states.pth", weights_only=True)  # plain data and tensors only
    fresh = learner(tmp_path / "fresh")
    for cb in fresh.cbs:
        if cb.name in loaded:  # (not the progress bar, away under no_logging)
            cb.load_state_dict(loaded[cb.name])
    assert fresh.recorder.values == learn.recorder.values and fresh.recorder.losses == learn.recorder.losses
    assert fresh.recorder.smooth_loss.value == learn.recorder.smooth_loss.value
    assert fresh.save_model.best == learn.save_model.best and fresh.early_stopping.wait == learn.early_stopping.wait
    assert fresh.csv_logger.rows == learn.csv_logger.rows and len(fresh.csv_logger.rows) == 1
    assert fresh.param_scheduler.hps == learn.param_scheduler.hps and len(fresh.param_scheduler.hps["lr"]) == 17
    assert fresh.gradient_accumulation.count == learn.gradient_accumulation.count == 32
    assert all(torch.equal(p.grad, g) for p, g in zip(fresh.model.parameters(), learn.grads))


def test_mixed_precision_keeps_its_scaler_state_when_it_has_one():
    mp = MixedPrecision()
    assert mp.state_dict() == {}  # no scaler before a fit (and none enabled on the CPU)
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0)
    mp.scaler = scaler
    state = mp.state_dict()
    assert state["scaler"]["scale"] == 512.0
    mp.scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    mp.load_state_dict(state)
    assert mp.scaler.get_scale() == 512.0


def test_the_recorder_smooths_the_same_however_often_it_is_read(tmp_path):
    a = make_learner(tmp_path / "a")

    class ReadEveryBatch(Callback):
        def after_batch(self):
            self.learn.recorder.losses  # flushes the pending losses every batch
    fit(a, 2)
    b = make_learner(tmp_path / "b")  # made after a's fit, so that both fits start from the same seed
    with b.added_cbs(ReadEveryBatch()):
        fit(b, 2)
    assert a.recorder.losses == b.recorder.losses


# ---------------------------------------------------------------- SIGKILL, then simply run it again
def _env() -> dict:
    paths = [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _command(out: Path, args: list[str], ddp: bool) -> list[str]:
    if not ddp:
        return [sys.executable, str(WORKER), str(out), *args]
    torchrun = Path(sys.executable).parent / "torchrun"
    return [str(torchrun), "--standalone", "--nnodes", "1", "--nproc_per_node", "2", str(WORKER), str(out), "--ddp",
            *args]


def _run(out: Path, args: list[str], ddp: bool = False, kill_after: float | None = None) -> int:
    """Run the worker; with `kill_after`, SIGKILL it (its whole process group) that many seconds
    after its fit starts. Returns its exit code (-9 or torchrun's failure when killed)."""
    proc = subprocess.Popen(_command(out, args, ddp), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    output = []
    try:
        for line in proc.stdout:
            output.append(line)
            if kill_after is not None and "fit started" in line:
                time.sleep(kill_after)
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    code = proc.returncode
    if code not in (0, -signal.SIGKILL) and not (ddp and code != 0 and kill_after is None):
        raise AssertionError(f"worker ended with {code}:\n{''.join(output)[-3000:]}")
    return code


def _finish(out: Path, args: list[str], ddp: bool = False) -> dict:
    """Run the worker again, as a user would, until it ends normally; what it ended with."""
    for _ in range(5):
        if _run(out, args, ddp) == 0:
            result = torch.load(out / "result.pth", weights_only=True)
            assert not result["backup_left"]
            return result
    raise AssertionError("the worker did not finish in 5 runs")


def _same_result(a: dict, b: dict) -> None:
    for key in ("weights", "best"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}: {name} differs"
    for key in ("table", "losses", "csv"):
        assert a[key] == b[key], f"{key} differs"
    assert len(a["csv"]) == len(a["table"]) + 1  # the header and each epoch once


# (worker arguments, faults): a fault is "kill-at" WHAT:N (the worker kills itself there) or a
# delay in seconds after the fit starts (the test kills it from outside); seeded
_RNG = random.Random(17)
ONE_PROCESS_FAULTS = {
    "epoch-end backups": ([], [
        "write-history.csv:1", "write-history.csv:4", "write-history.csv:8", "write-backup.pth:1",
        "write-backup.pth:5", "write-model.pth:1", "write-model.pth:3", "after_epoch:1", "after_epoch:6",
        "after_epoch:8", "after_fit:1", "before_batch:450", "after_validate:3",
        *[round(_RNG.uniform(0.0, 1.3), 3) for _ in range(9)]]),
    "backups every 25 batches": (["--every-n-batches", "25"], [
        "write-backup.pth:2", "write-backup.pth:17", "before_batch:90", "before_batch:611", "after_batch:149",
        "write-history.csv:3", *[round(_RNG.uniform(0.0, 1.5), 3) for _ in range(6)]]),
}


@pytest.fixture(scope="module")
def worker_reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("worker_reference")
    assert _run(out, []) == 0
    return torch.load(out / "result.pth", weights_only=True)


def _kill_then_finish(out: Path, args: list[str], fault, ddp: bool = False) -> tuple[bool, dict]:
    """One fault, then runs until the worker ends: (whether the kill landed, what the run ended with)."""
    if isinstance(fault, str):
        code = _run(out, [*args, "--kill-at", fault], ddp)
    else:
        code = _run(out, args, ddp, kill_after=fault)
    result = _finish(out, args, ddp)
    left = [p.name for p in out.rglob("*.tmp")]
    assert not left, f"temporary files left behind: {left}"
    return code != 0, result


@pytest.mark.parametrize("config", list(ONE_PROCESS_FAULTS))
def test_sigkill_anywhere_then_run_again_ends_as_the_uninterrupted_run(tmp_path, worker_reference, config):
    args, faults = ONE_PROCESS_FAULTS[config]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two sequences at a time, one a core
        outcomes = list(pool.map(lambda i: _kill_then_finish(tmp_path / f"run{i}", args, faults[i]),
                                 range(len(faults))))
    for _, result in outcomes:
        _same_result(result, worker_reference)
    killed = sum(landed for landed, _ in outcomes)
    assert killed >= len(faults) - 2  # a random kill may come after the run ended; the targeted ones always land
    print(f"{config}: {len(faults)} faults injected, {killed} kills landed, all survived")


def test_sigkill_under_torchrun_then_run_again_ends_as_the_uninterrupted_run(tmp_path):
    reference_out = tmp_path / "reference"
    assert _run(reference_out, [], ddp=True) == 0
    reference = torch.load(reference_out / "result.pth", weights_only=True)
    faults = ["write-backup.pth:3", "before_batch:200", "after_epoch:4", 2.0]
    for i, fault in enumerate(faults):
        landed, result = _kill_then_finish(tmp_path / f"run{i}", ["--every-n-batches", "25"], fault, ddp=True)
        assert landed
        _same_result(result, reference)
    print(f"torchrun, 2 processes: {len(faults)} faults injected, all survived")


# ---------------------------------------------------------------- a full disk (a small tmpfs; needs root)
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/disk, unmounted afterwards; skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_mid_run_loses_nothing_and_the_run_resumes_once_there_is_room(small_disk, reference):
    filler = small_disk / "filler"

    class FillTheDisk(Callback):
        order = 105
        def before_epoch(self):
            if self.learn.epoch == 3:
                with open(filler, "wb", buffering=0) as f, pytest.raises(OSError):
                    while True:
                        f.write(b"\0" * 4096)
                        f.flush()
    learn = make_learner(small_disk, extra=[FillTheDisk()])
    with pytest.raises(OSError, match="No space left on device") as failure:
        fit(learn)
    assert str(small_disk) in str(failure.value)  # the error names the file it could not write
    csv_before = (small_disk / "history.csv").read_bytes()
    assert csv_before.endswith(b"\r\n") and len(csv_before.splitlines()) == 4  # the header, epochs 0-2, whole
    assert load_checkpoint(learn.checkpoint_path("backup"))["epoch"] == 2  # the last backup, intact
    assert not list(small_disk.rglob("*.tmp"))
    filler.unlink()  # room again: run it again
    again = make_learner(small_disk)
    fit(again)
    assert again.backup.resumed_from == (3, None)
    assert_same(outcome(again), reference)


def test_a_resumed_pass_never_fetches_the_batches_it_had_done():
    from minilearn import DataLoader
    from minilearn.distributed import DistributedDL

    x = torch.arange(50.0)[:, None]
    fetched = []

    class Counting(DataLoader):
        def _batch(self, idx):
            fetched.append(len(idx))
            return super()._batch(idx)
    whole = [b[0] for b in Counting((x,), bs=8, shuffle=True, seed=3)]
    fetched.clear()
    later = [b[0] for b in Counting((x,), bs=8, shuffle=True, seed=3).batches_from(4)]
    assert len(fetched) == 3 and all(torch.equal(a, b) for a, b in zip(later, whole[4:]))  # same order, 3 fetches
    shard = DistributedDL(DataLoader((x,), bs=8, shuffle=True, seed=3), rank=1, world_size=2)
    all_shard = [b[0] for b in shard]
    shard.dl.generator.manual_seed(3)
    later = [b[0] for b in shard.batches_from(5)]
    assert len(later) == 2 and all(torch.equal(a, b) for a, b in zip(later, all_shard[5:]))
    wrapped = DataLoader(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=8))
    assert [b[0][0, 0].item() for b in wrapped.batches_from(5)] == [40.0, 48.0]  # a torch loader's: read, dropped


@pytest.mark.parametrize("num_workers", [0, 2])
def test_image_folders_with_random_flips_resume_mid_epoch_exactly(tmp_path, num_workers):
    """Loaders over files (decoded in workers) with a random batch transform: the batches a resumed
    pass skips are never decoded nor flipped, so the flips after it are those of the whole run."""
    import numpy as np
    from PIL import Image

    from minilearn import Flip

    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("valid", 8)):
        for label in ("a", "b"):
            (tmp_path / "data" / split / label).mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 255, (6, 6), dtype=np.uint8)).save(
                    tmp_path / "data" / split / label / f"{k}.png")

    def learner(path, extra=()):
        set_seed(0)
        dls = DataLoaders.from_folder(tmp_path / "data", bs=8, seed=0, batch_tfms=Flip(), num_workers=num_workers)
        model = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
        return Learner(dls, model, CrossEntropyLossFlat(), path=path,
                       cbs=[BackupCallback(every_n_batches=2), CSVLogger(), *extra])
    ref = learner(tmp_path / "ref")
    fit(ref, 3)
    crashed = learner(tmp_path / "run", [CrashAt(1, 3)])
    with pytest.raises(Crash):
        fit(crashed, 3)
    again = learner(tmp_path / "run")
    fit(again, 3)
    assert again.backup.resumed_from == expected_resume(1, 3, 2, n_iter=6) == (1, 2)
    assert all(torch.equal(a, b) for a, b in zip(again.model.parameters(), ref.model.parameters()))
    assert again.recorder.losses == ref.recorder.losses
    for learn in (ref, crashed, again):
        learn.dls.close()


def test_the_resumed_run_shows_the_whole_table(tmp_path, capsys):
    learn = make_learner(tmp_path, extra=[CrashAt(2, 4)])
    with pytest.raises(Crash):
        fit(learn)
    again = make_learner(tmp_path)
    capsys.readouterr()
    with again.no_bar():  # the table without the bar
        again.fit_one_cycle(6, 3e-2)
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split()[0] for line in lines if line[:1].isdigit()]
    assert rows == [str(e) for e in range(6)]  # the epochs done before the crash too, each once
    assert lines[0].startswith("epoch") and any(line.startswith("Resumed from backup") for line in lines)
