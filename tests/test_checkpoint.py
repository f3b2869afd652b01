"""Checkpoints: atomic writes, loads that refuse code, and no half-loaded models."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from minilearn.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from synthetic import regression_learner


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
