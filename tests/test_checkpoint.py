"""Checkpoints: atomic writes, loads that refuse code, no half-loaded models, resumed runs, kills mid-save."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from minilearn import Callback, DataLoaders, Learner, SaveModelCallback
from minilearn.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from synthetic import class_learner, linear_data, regression_learner


def trained(tmp_path, **kw):
    learn = regression_learner(path=tmp_path, **kw)
    with learn.no_logging():
        learn.fit(2)
    return learn


def test_save_load_round_trip_with_optimizer(tmp_path):
    learn = trained(tmp_path)
    path = learn.save("ckpt")
    assert path == tmp_path / "models" / "ckpt.pth" and path.is_file()
    other = regression_learner(path=tmp_path, seed=5)
    other.load("ckpt")
    for a, b in zip(learn.model.parameters(), other.model.parameters()):
        assert torch.equal(a, b)
    assert other.opt.hypers == learn.opt.hypers
    for p, q in zip(learn.model.parameters(), other.model.parameters()):
        for k, v in learn.opt.state.get(p, {}).items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, other.opt.state[q][k])


def test_load_gives_a_fresh_learner_an_optimizer_even_without_its_state(tmp_path):
    """fastai's: after `load` the learner has an optimiser; `with_opt=False` leaves its state fresh."""
    from minilearn import Adam

    def adam_learner(seed):
        x, y, vx, vy = linear_data(64, 32, seed=seed)
        torch.manual_seed(seed)
        return Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=seed), nn.Linear(x.shape[1], 1),
                       nn.MSELoss(), opt_func=Adam, lr=0.01, path=tmp_path)

    def moments(learn):
        return [k for p in learn.model.parameters() for k in learn.opt.state.get(p, {}) if k != "do_wd"]

    learn = adam_learner(0)
    with learn.no_logging():
        learn.fit(1)
    assert moments(learn)  # the saved run has Adam's averages
    learn.save("no_opt", with_opt=False)
    other = adam_learner(5)
    assert other.opt is None
    other.load("no_opt", with_opt=False)
    assert other.opt is not None and moments(other) == []
    for a, b in zip(learn.model.parameters(), other.model.parameters()):
        assert torch.equal(a, b)
    with other.no_logging():
        other.fit(1)  # and it trains from there
    assert moments(other)


def test_load_with_rng_puts_back_generators_and_epoch(tmp_path):
    learn = trained(tmp_path)
    learn.save("ckpt")
    expected = [b[0].clone() for b in learn.dls.train]
    torch.manual_seed(123)
    list(learn.dls.train)  # advance the loader's generator
    learn.epoch = 0
    learn.load("ckpt", with_rng=True)
    assert learn.epoch == 1
    assert all(torch.equal(a, b[0]) for a, b in zip(expected, learn.dls.train))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temporary file left behind


class Evil:
    """Unpickling this would run code: `torch.load(weights_only=True)` must refuse it."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, path)
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out


def test_truncated_and_missing_checkpoints(tmp_path):
    learn = trained(tmp_path)
    path = learn.save("ckpt")
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    data = path.read_bytes()
    (tmp_path / "models" / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        learn.load("cut")
    with pytest.raises(FileNotFoundError, match="nope"):
        learn.load("nope")
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())


def test_mismatched_weights_load_nothing(tmp_path):
    learn = trained(tmp_path)
    save_checkpoint({"model": {"weight": torch.zeros(1, 3), "bias": torch.zeros(2)}}, tmp_path / "models" / "bad.pth")
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(ValueError, match="shapes differ"):
        learn.load("bad")
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())
    save_checkpoint({"model": {"weight": torch.zeros(1, 3)}}, tmp_path / "models" / "short.pth")
    with pytest.raises(ValueError, match="missing"):
        learn.load("short")


def test_checkpoint_holds_model_opt_epoch_and_rng(tmp_path):
    learn = trained(tmp_path)
    ckpt = load_checkpoint(learn.save("ckpt"))
    assert set(ckpt) == {"model", "epoch", "rng", "opt"} and ckpt["epoch"] == 1
    assert set(load_checkpoint(learn.save("no_opt", with_opt=False))) == {"model", "epoch", "rng"}


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


SAVER = textwrap.dedent("""
    import sys, torch
    from torch import nn
    sys.path.insert(0, {tests!r})
    from synthetic import linear_data
    from minilearn import DataLoaders, Learner
    x, y, vx, vy = linear_data()
    model = nn.Sequential(nn.Linear(3, 4000), nn.Linear(4000, 4000), nn.Linear(4000, 1))  # ~64 MB of weights
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy), model, nn.MSELoss(), path={path!r})
    with torch.no_grad():
        for p in model.parameters(): p.fill_(1.0)
    learn.save("ckpt")
    print("first", flush=True)
    value = 2.0
    while True:
        with torch.no_grad():
            for p in model.parameters(): p.fill_(value)
        print("saving", value, flush=True)
        learn.save("ckpt")
        value += 1
""")


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.08])
def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path, delay):
    script = tmp_path / "saver.py"
    script.write_text(SAVER.format(tests=str(Path(__file__).parent), path=str(tmp_path)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "first"
        line = proc.stdout.readline()          # a save has started
        assert line.startswith("saving")
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    x, y, vx, vy = linear_data()
    model = nn.Sequential(nn.Linear(3, 4000), nn.Linear(4000, 4000), nn.Linear(4000, 1))
    learn = Learner(DataLoaders.from_tensors(x, y, vx, vy), model, nn.MSELoss(), path=tmp_path)
    learn.load("ckpt")                              # a whole checkpoint, old or new
    values = {p.flatten()[0].item() for p in model.parameters()}
    assert len(values) == 1 and all(torch.all(p == p.flatten()[0]) for p in model.parameters())


def test_saving_never_touches_the_umask_and_keeps_an_existing_files_mode(tmp_path, monkeypatch):
    import stat

    def no_umask(mask):
        raise AssertionError("os.umask was called")

    learn = trained(tmp_path)
    old = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", no_umask)
        path = learn.save("fresh")
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0o666 under the process's umask
        os.chmod(path, 0o600)
        learn.save("fresh")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a private checkpoint stays private
    finally:
        monkeypatch.undo()
        os.umask(old)


def test_a_failed_save_names_the_file_and_leaves_nothing_behind(tmp_path, monkeypatch):
    learn = trained(tmp_path)
    path = learn.save("ckpt")
    before = path.read_bytes()

    def full_disk(obj, f):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"No space left on device: '.*models/ckpt.pth'"):
        learn.save("ckpt")
    assert path.read_bytes() == before and not list(path.parent.glob(".*"))


def test_save_always_adds_pth_as_fastai_does(tmp_path):
    learn = trained(tmp_path)
    assert learn.save("run1.best") == tmp_path / "models" / "run1.best.pth"
    assert learn.save("run2.pth") == tmp_path / "models" / "run2.pth"
    learn.load("run1.best")  # and finds it again under the same name


def test_load_checks_everything_before_changing_anything(tmp_path):
    """Another optimiser's state, state of the wrong shape, a broken RNG state, an epoch that is not
    an int: each is refused, naming the file, with the weights and optimiser as they were."""
    from minilearn import Adam

    sgd = trained(tmp_path)  # regression_learner: SGD
    sgd.save("sgd")
    ckpt = load_checkpoint(sgd.checkpoint_path("sgd"))

    def adam_learner():
        x, y, vx, vy = linear_data(64, 32, seed=3)
        torch.manual_seed(3)
        learn = Learner(DataLoaders.from_tensors(x, y, vx, vy, bs=16, seed=3), nn.Linear(x.shape[1], 1),
                        nn.MSELoss(), opt_func=Adam, lr=0.01, path=tmp_path)
        with learn.no_logging():
            learn.fit(1)
        return learn

    def unchanged_after(learn, name, error):
        weights = [p.detach().clone() for p in learn.model.parameters()]
        opt_state = learn.opt.state_dict()
        with pytest.raises(ValueError, match=error):
            learn.load(name, with_rng=True)
        assert all(torch.equal(a, b) for a, b in zip(weights, learn.model.parameters()))
        after = learn.opt.state_dict()
        assert after["hypers"] == opt_state["hypers"] and all(
            torch.equal(a[k], b[k]) for ga, gb in zip(after["state"], opt_state["state"]) for a, b in zip(ga, gb)
            for k in a if isinstance(a[k], torch.Tensor))

    adam = adam_learner()
    unchanged_after(adam, "sgd", r"sgd.pth: its optimiser state does not fit: .*another optimiser's state")
    bad_shape = {**ckpt, "opt": {**ckpt["opt"], "state": [[{**s, "grad_avg": torch.zeros(7)} for s in g]
                                                          for g in ckpt["opt"]["state"]]}}
    save_checkpoint(bad_shape, tmp_path / "models" / "shape.pth")
    unchanged_after(sgd, "shape", r"shape.pth: .*grad_avg.* has a shape other than")
    save_checkpoint({**ckpt, "rng": {**ckpt["rng"], "torch": torch.zeros(3, dtype=torch.uint8)}}, tmp_path / "models" / "rng.pth")
    unchanged_after(sgd, "rng", r"rng.pth: its random number generator state is not valid")
    save_checkpoint({**ckpt, "epoch": "five"}, tmp_path / "models" / "epoch.pth")
    unchanged_after(sgd, "epoch", r"epoch.pth: its epoch is 'five', expected an int >= 0")


def test_load_and_resume_say_when_a_run_cannot_continue_exactly(tmp_path):
    learn = trained(tmp_path)
    learn.save("no_opt", with_opt=False)
    other = regression_learner(path=tmp_path)
    with pytest.warns(UserWarning, match="no_opt.pth: it holds no optimiser state"):
        other.load("no_opt")
    with pytest.warns(UserWarning, match="resuming at start_epoch=1 without the checkpoint's optimiser state or random"):
        with other.no_logging():
            other.fit(2, start_epoch=1)
    learn.save("full")
    resumed = regression_learner(path=tmp_path)
    resumed.load("full", with_rng=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with resumed.no_logging():
            resumed.fit(3, start_epoch=2)


def test_a_flipped_bit_in_the_weights_is_caught_and_damaged_files_name_themselves(tmp_path):
    learn = trained(tmp_path)
    path = learn.save("ckpt")
    assert "checksum" not in load_checkpoint(path)  # checked and removed on load
    obj = torch.load(path, weights_only=True)
    assert isinstance(obj["checksum"], str) and len(obj["checksum"]) == 64
    obj["model"]["weight"].view(torch.int32)[0, 0] ^= 1  # one bit of one weight
    torch.save(obj, path)  # (as a damaged disk would leave it: the checksum is the old one)
    with pytest.raises(ValueError, match=r"ckpt.pth: its tensors do not match the checksum"):
        learn.load("ckpt")
    export = learn.export("model.pth")
    obj = torch.load(export, weights_only=True)
    first = next(iter(obj["state_dict"]))
    obj["state_dict"][first].view(torch.int32).reshape(-1)[0] ^= 1
    torch.save(obj, export)
    from minilearn import load_learner
    with pytest.raises(ValueError, match="model.pth: its tensors do not match the checksum"):
        load_learner(export)
    for name, data in [("text.pth", b"epoch,loss\n0,1.0\n"), ("junk.pth", bytes(range(256)) * 8), ("empty.pth", b"")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=rf"checkpoint .*{name}: (truncated or corrupted|refused to load)"):
            load_checkpoint(tmp_path / name)  # minilearn's error, naming the file, whatever the bytes


def test_files_saved_before_checksums_still_load(tmp_path):
    learn = trained(tmp_path)
    path = learn.checkpoint_path("old")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": learn.model.state_dict(), "epoch": 1}, path)  # no checksum, as older versions wrote
    learn.load("old", with_opt=False)


def test_ctrl_c_during_torch_save_comes_out_as_keyboard_interrupt(tmp_path):
    """SIGINT while torch.save's C++ writer calls the file's write surfaces there as torch's
    RuntimeError; atomic_write says what it was, and the previous file is as it was."""
    path = tmp_path / "big.pth"
    path.write_bytes(b"the previous file")

    class InterruptedFile:  # the file torch.save writes to; Ctrl-C arrives at its third write
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    state = {"a": torch.randn(500, 100), "b": torch.randn(500, 100)}
    with pytest.raises(KeyboardInterrupt, match="interrupted while writing"):
        atomic_write(path, lambda f: torch.save(state, InterruptedFile(f)))
    assert path.read_bytes() == b"the previous file" and not list(tmp_path.glob(".*"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler put back


def test_files_another_thread_creates_while_saving_keep_the_umask(tmp_path):
    """Saving never changes the process's umask, so files made meanwhile by other threads get the
    mode the umask gives them (never world-writable)."""
    import stat
    import threading

    learn = trained(tmp_path)
    old = os.umask(0o022)
    stop, modes = threading.Event(), []

    def make_files():
        i = 0
        while not stop.is_set():
            p = tmp_path / f"other{i % 50}"
            p.unlink(missing_ok=True)
            with open(p, "w"):
                pass
            modes.append(stat.S_IMODE(p.stat().st_mode))
            i += 1
    other = threading.Thread(target=make_files)
    other.start()
    try:
        for _ in range(30):
            learn.save("ckpt")
    finally:
        stop.set()
        other.join()
        os.umask(old)
    assert len(modes) > 100 and set(modes) == {0o644}
