"""The tutorial examples a-e run and reach their figures (the MNIST ones shortened here, iris in full)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import tutorial_a_mnist_mse  # noqa: E402
import tutorial_b_mnist_2v9  # noqa: E402
import tutorial_c_scratch_mlp  # noqa: E402
import tutorial_d_mnist_adam  # noqa: E402

TUTORIALS = ["tutorial_a_mnist_mse", "tutorial_b_mnist_2v9", "tutorial_c_scratch_mlp", "tutorial_d_mnist_adam",
             "tutorial_e_iris_sklearn"]


@pytest.mark.parametrize("name", TUTORIALS)
def test_every_tutorial_has_help_and_a_main(name, capsys):
    if name.endswith("sklearn"):
        pytest.importorskip("sklearn")
    module = __import__(name)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.mnist
def test_a_linear_sigmoid_mse_full_batch_shortened(mnist_root, capsys):
    result = tutorial_a_mnist_mse.main(["--steps", "100", "--steps-per-epoch", "50", "--root", str(mnist_root)])
    assert result["accuracy"] >= 0.95  # the full 2000 steps reach 0.984
    assert 0 < result["train_loss"] < 0.05 and 0 < result["valid_loss"] < 0.05
    out = capsys.readouterr().out
    assert "epoch     train_loss  valid_loss  binary_accuracy  time" in out
    assert "after 100 steps: train loss" in out


@pytest.mark.mnist
def test_b_seven_steps_2v9_shortened(mnist_root, capsys):
    result = tutorial_b_mnist_2v9.main(["--linear-epochs", "1", "--net-epochs", "2", "--root", str(mnist_root)])
    assert result["linear"] >= 0.95 and result["relu_net"] >= 0.95  # full length: at least 0.97
    assert capsys.readouterr().out.count("epoch     train_loss  valid_loss  batch_accuracy  time") == 2


@pytest.mark.mnist
def test_c_scratch_mlp_shortened(mnist_root, capsys):
    result = tutorial_c_scratch_mlp.main(["--epochs", "1", "--limit", "20000", "--root", str(mnist_root)])
    assert result["accuracy"] >= 0.9  # full length: at least 0.93
    assert "epoch     train_loss  valid_loss  accuracy  time" in capsys.readouterr().out


@pytest.mark.mnist
def test_d_nn_module_adam_shortened(mnist_root, capsys):
    result = tutorial_d_mnist_adam.main(["--epochs", "1", "--limit", "20000", "--root", str(mnist_root)])
    assert result["accuracy"] >= 0.93  # full length (2 epochs): at least 0.961
    assert "epoch     train_loss  valid_loss  accuracy  time" in capsys.readouterr().out


def test_e_iris_estimator_full_length(capsys):
    pytest.importorskip("sklearn")
    import tutorial_e_iris_sklearn

    result = tutorial_e_iris_sklearn.main(["--cv", "3"])
    assert result["accuracy"] >= 0.9 and result["cv_accuracy"] >= 0.85
    out = capsys.readouterr().out
    assert out.count("\n") > 100  # the Learner's table, one row per epoch
    assert "test accuracy" in out.splitlines()[-1]


def test_e_iris_in_a_pipeline(capsys):
    pytest.importorskip("sklearn")
    import tutorial_e_iris_sklearn

    result = tutorial_e_iris_sklearn.main(["--scale", "--quiet", "--cv", "0", "--epochs", "50"])
    assert result["accuracy"] >= 0.9 and result["cv_accuracy"] is None
    assert "Pipeline" in capsys.readouterr().out
