"""The benchmarks run end to end at a tiny size: every row printed, results written.

Nothing here is timed: speed is measured by running `benchmarks/overhead.py` itself, as ratios
within one run, never asserted in a test.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "overhead.py"
WORKLOADS = ("W1", "W2", "W3a", "W3b", "W4")


def _variants() -> list[str]:
    return ["a", "b", "c", "d"] + (["e"] if importlib.util.find_spec("fastai") is not None else [])


def test_overhead_benchmark_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "sub" / "results.md"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--reps", "2", "--scale", "0.002", "--min-rep-s", "0",
         "--import-reps", "1", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.is_file() and not (out.parent / "results.md.tmp").exists()
    text = out.read_text()
    for where in (proc.stdout, text):
        for w in WORKLOADS:
            for v in _variants():
                assert f"| {w} | ({v}) " in where, f"no row for {w} ({v})"
    for section in ("## Machine and versions", "## Targets (issue 7)", "## Import time", "## Peak memory, W3a",
                    "## Host synchronisations in one epoch of W1"):
        assert section in text, section
    assert '`python -c "import minilearn"`' in text and '`python -c "import torch"`' in text
    for v in _variants():
        assert f"| ({v}) " in text.split("## Peak memory")[1].split("##")[0], f"no memory row for ({v})"
    # the sync check compares two batch sizes: minilearn's count must not grow with the batches
    assert "PASS: no per-batch host sync in (c)" in text


def test_overhead_benchmark_rejects_bad_arguments():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--workloads", "W9"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "--workloads" in proc.stderr


OPTIMIZER_SCRIPT = ROOT / "benchmarks" / "optimizer_step.py"


def test_optimizer_step_benchmark_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "opt.md"
    proc = subprocess.run([sys.executable, str(OPTIMIZER_SCRIPT), "--reps", "1", "--min-rep-s", "0.01", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    variants = ["ml", "ml-loop", "foreach", "fused"] + (["fastai"] if importlib.util.find_spec("fastai") else [])
    for where in (proc.stdout, text):
        for opt in ("SGD", "Adam"):
            for s in ("(a)", "(b)"):
                for v in variants:
                    assert f"| {opt} | {s} | ({v}) " in where, f"no row for {opt} {s} ({v})"
    for opt in ("SGD", "Adam"):  # the fast path and the loop agree exactly, checked in every run
        for s in ("(a)", "(b)"):
            assert f"- {opt} {s}, 5 steps: minilearn fast path vs loop (parameters and state) torch.equal: True" in text
