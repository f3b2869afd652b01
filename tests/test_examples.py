"""The examples run from a shell and reach their figures (shortened here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import mnist_basics  # noqa: E402


@pytest.mark.mnist
def test_mnist_basics_shortened_reaches_90_percent(mnist_root, capsys):
    result = mnist_basics.main(["--linear-epochs", "2", "--net-epochs", "3", "--root", str(mnist_root)])
    assert result["linear"] > 0.9 and result["relu_net"] > 0.9
    out = capsys.readouterr().out
    assert out.count("epoch     train_loss  valid_loss  batch_accuracy  time") == 2


@pytest.mark.mnist
def test_mnist_basics_from_a_shell_is_deterministic(mnist_root):
    cmd = [sys.executable, str(ROOT / "examples" / "mnist_basics.py"), "--linear-epochs", "1", "--net-epochs", "1"]
    env = {**os.environ, "MINILEARN_DATA": str(mnist_root)}
    runs = [subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
        assert "\r" not in r.stdout + r.stderr  # no bar redraws into a pipe
    strip_time = [[line.rsplit(None, 1)[0] for line in r.stdout.splitlines() if line[:1].isdigit()] for r in runs]
    assert strip_time[0] == strip_time[1] and len(strip_time[0]) == 2


import mnist_one_cycle  # noqa: E402


@pytest.mark.mnist
def test_mnist_one_cycle_shortened(mnist_root, tmp_path, capsys):
    plot = tmp_path / "lr_find.png"
    result = mnist_one_cycle.main(["--epochs", "1", "--root", str(mnist_root), "--plot", str(plot)])
    assert 1e-5 < result["lr"] < 1e-1
    assert result["accuracy"] > 0.95
    assert plot.read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "lr_find suggests lr" in out and "epoch     train_loss  valid_loss  accuracy  time" in out


import compare_fastai  # noqa: E402


@pytest.mark.mnist
def test_compare_fastai_shortened(mnist_root, fastai, capsys):
    diffs = compare_fastai.main(["--linear-epochs", "2", "--net-epochs", "2", "--root", str(mnist_root)])
    for name in ("linear", "relu_net"):
        assert max(v for k, v in diffs[name].items() if "per batch" not in k) < 1e-5
    out = capsys.readouterr().out
    assert out.count("largest difference:") == 2 and "batch_accuracy (fastai)" in out


import accel_sgd  # noqa: E402


@pytest.mark.mnist
def test_accel_sgd_shortened_matches_fastai(mnist_root, fastai, capsys):
    status = accel_sgd.main(["--epochs", "1", "--limit", "1000", "--valid-limit", "500", "--root", str(mnist_root)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.count("epoch     train_loss  valid_loss  accuracy  time") == 5  # the book's table, per experiment
    assert out.count("largest difference:") == 5 and "lr_find suggests lr" in out
    for title, _, _ in accel_sgd.EXPERIMENTS:  # a short run: Adam too is within --tol
        assert any(line.startswith(title) and line.split()[-1] in ("ok", "bound)") and "DIFFERS" not in line
                   for line in out.splitlines()), title
    assert "all differences within tol 1e-05" in out


import mnist_cnn  # noqa: E402


@pytest.mark.mnist
def test_mnist_cnn_quick(mnist_root, capsys):
    result = mnist_cnn.main(["--quick", "--root", str(mnist_root)])
    assert result["accuracy"] > 0.7  # 2000 images, one epoch: about 0.86
    out = capsys.readouterr().out
    assert "epoch     train_loss  valid_loss  accuracy  time" in out and "test accuracy:" in out
