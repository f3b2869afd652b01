"""DistributedTrainer and distrib_ctx: without torchrun, and 2-process torchrun runs on CPU (gloo).

The torchrun tests start real processes (about 10 s each on two cores, mostly importing torch);
every one is bounded by a subprocess timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minilearn.callbacks.distributed import DistributedTrainer, distrib_ctx
from minilearn.distributed import is_rank0, num_distrib, rank_distrib
import ddp_worker
from synthetic import regression_learner


ROOT = Path(__file__).resolve().parents[1]
TORCHRUN_TIMEOUT = 180  # seconds; a run takes about 10 here


def torchrun(script: Path, *args: str, nproc: int = 2, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run `script` under torchrun on this machine only; returns the finished process and its wall time."""
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if exe is None:
        pytest.fail("torchrun is not installed (it comes with torch)")
    paths = [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]  # this checkout's minilearn
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [exe, "--standalone", "--nnodes", "1", "--nproc_per_node", str(nproc), str(script), *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT)
    return proc, time.perf_counter() - start


def test_without_torchrun_distrib_ctx_changes_nothing(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    a, b = regression_learner(), regression_learner()
    with a.no_logging(), b.no_logging():
        with distrib_ctx(a) as learn:
            assert learn is a and not any(isinstance(cb, DistributedTrainer) for cb in a.cbs)
            a.fit(2)
        b.fit(2)
    assert (rank_distrib(), num_distrib(), is_rank0()) == (0, 1, True)
    assert not torch.distributed.is_initialized()
    assert a.recorder.values == b.recorder.values


def test_trainer_needs_a_process_group():
    learn = regression_learner()
    with learn.no_logging(), pytest.raises(RuntimeError, match="no torch.distributed process group"):
        learn.fit(1, cbs=DistributedTrainer())


# ---------------------------------------------------------------- two processes against one
@pytest.fixture(scope="module")
def two_procs(tmp_path_factory):
    """The worker's trainings on 2 processes (torchrun) and on 1 (this process), same data and seeds."""
    out2, out1 = tmp_path_factory.mktemp("ddp2"), tmp_path_factory.mktemp("ddp1")
    proc, seconds = torchrun(ROOT / "tests" / "ddp_worker.py", "train", str(out2))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(out2 / f"rank{r}.pt", weights_only=False) for r in range(2)]
    one = ddp_worker.run_all(out1)
    return {"ranks": ranks, "one": one, "out": out2, "stdout": proc.stdout, "seconds": seconds}


def _max_weight_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("name", list(ddp_worker.CONFIGS))
def test_two_processes_end_with_the_weights_and_metrics_of_one(two_procs, name):
    one, (r0, r1) = two_procs["one"][name], [r[name] for r in two_procs["ranks"]]
    assert _max_weight_diff(r0["weights"], r1["weights"]) == 0  # DDP keeps the ranks identical
    assert _max_weight_diff(one["weights"], r0["weights"]) < 1e-5
    # the whole table: train_loss (synced), valid_loss and both metrics, every epoch
    assert len(one["values"]) == len(r0["values"])
    for row1, row2 in zip(one["values"], r0["values"]):
        assert row2 == pytest.approx(row1, abs=1e-5)
    assert r0["validate"] == r1["validate"]  # all-reduced: every rank holds the same numbers
    assert r0["validate"] == pytest.approx(one["validate"], abs=1e-6)
    preds1, targs1 = one["preds"]
    preds2, targs2 = r0["preds"]  # get_preds gathers every rank's share, in the dataset's order
    assert torch.equal(targs1, targs2) and torch.allclose(preds1, preds2, atol=1e-5)


def test_lr_find_under_ddp_gives_the_single_process_curve(two_procs):
    (valley1, losses1), (valley2, losses2) = two_procs["one"]["even"]["lr_find"], two_procs["ranks"][0]["even"]["lr_find"]
    assert valley2 == pytest.approx(valley1, rel=1e-6)
    assert losses2 == pytest.approx(losses1, abs=1e-5)
    assert two_procs["ranks"][1]["even"]["lr_find"] == two_procs["ranks"][0]["even"]["lr_find"]


def test_only_rank0_prints_the_table(two_procs):
    headers = [line for line in two_procs["stdout"].splitlines() if line.startswith("epoch     train_loss")]
    assert len(headers) == len(ddp_worker.CONFIGS)  # one table per fit, not one per rank


def test_checkpoint_saved_under_ddp_loads_in_one_process(two_procs, tmp_path):
    for name, (n, n_valid, bs, _) in ddp_worker.CONFIGS.items():
        learn = ddp_worker.make_learner(n, n_valid, bs, two_procs["out"])
        learn.load(f"{name}_best")  # written by SaveModelCallback during the 2-process fit
        assert learn.validate() == pytest.approx(two_procs["ranks"][0][name]["validate"], abs=1e-6)
        assert _max_weight_diff(dict(learn.model.state_dict()), two_procs["ranks"][0][name]["weights"]) == 0


def test_only_rank0_writes_checkpoints(two_procs):
    models = two_procs["out"] / "models"
    for name in ddp_worker.CONFIGS:
        assert (models / f"{name}_rank0.pth").is_file()
        assert not (models / f"{name}_rank1.pth").exists()


def test_a_failing_rank_ends_the_run_with_its_error(tmp_path):
    proc, seconds = torchrun(ROOT / "tests" / "ddp_worker.py", "fail", str(tmp_path))
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ValueError: deliberate failure on rank 1" in output
    assert "minilearn: raised on rank 1 of 2" in output
    assert seconds < 90  # the other rank, waiting on the dead one, is stopped: no hang until the timeout


# ---------------------------------------------------------------- the example
@pytest.mark.mnist
def test_train_ddp_example_one_and_two_processes(mnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MINILEARN_DATA", str(mnist_root))
    args = ["--epochs", "1", "--limit", "4000", "--save", "ddp_example"]
    proc, _ = torchrun(ROOT / "examples" / "train_ddp.py", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("epoch     train_loss  valid_loss  accuracy  time") == 1
    assert "on 2 process(es)" in proc.stdout
    two = torch.load(tmp_path / "models" / "ddp_example.pth", weights_only=True)["model"]

    monkeypatch.chdir(tmp_path / "models")  # the single process saves beside, in models/models/
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import train_ddp
    finally:
        sys.path.remove(str(ROOT / "examples"))
    result = train_ddp.main(args)
    one = torch.load(tmp_path / "models" / "models" / "ddp_example.pth", weights_only=True)["model"]
    assert result["accuracy"] > 0.8
    assert _max_weight_diff(one, two) < 1e-5


def test_distrib_ctx_checks_its_arguments_on_one_process_too():
    from datetime import timedelta

    from minilearn import distrib_ctx
    from synthetic import small_learner

    learn = small_learner()
    for kwargs, error, arg in [(dict(timeout=5), TypeError, "timeout"), (dict(backend=3), ValueError, "backend"),
                               (dict(sync_loss="yes"), TypeError, "sync_loss"),
                               (dict(unknown=1), TypeError, "unknown")]:
        with pytest.raises(error, match=arg):
            with distrib_ctx(learn, **kwargs):
                pass
    with distrib_ctx(learn, timeout=timedelta(seconds=5), find_unused_parameters=True):
        assert learn.opt is None  # alone, nothing changes
