"""How much a training loop costs on top of the work itself: minilearn against a hand-written loop.

One process times one epoch (train + valid) of five variants, repetitions interleaved round-robin
(the machines are shared and noisy, so a slow spell hits every variant alike):

    a  a hand-written loop over tensors batched by slicing a shuffled permutation  (the reference)
    b  the same loop over torch's DataLoader(TensorDataset(...), shuffle=True)
    c  minilearn's Learner with its default callbacks, no progress bar
    d  minilearn's Learner with the progress bar drawn (tqdm, sent to os.devnull)
    e  fastai's Learner without its progress bar (when fastai is installed)

on fastbook's workloads, with synthetic data of the same shapes:

    W1   linear model 784 -> 1, 12396 train / 2038 valid, bs 256, SGD lr 1.0, mnist_loss
    W2   784-30-1 ReLU net, same data, SGD lr 0.1
    W3a  784-256-10 ReLU net, 60000 / 10000, SGD lr 0.01 momentum 0.9, cross-entropy, bs 64
    W3b  the same at bs 512
    W4   a small CNN with BatchNorm (conv 8-16-32, stride 2, then a linear layer) on 1x28x28
         images, 60000 / 10000, bs 64, Adam with fastai's defaults (lr 1e-3), cross-entropy

Every variant does the same work per epoch: forward, loss, backward, step, zero_grad per training
batch, plus the batch's loss kept on the device and turned into fastai's smoothed loss (EMA,
debiased) at the end of the epoch; forward and loss under no_grad per validation batch, summed
size-weighted on the device; one host sync at the end of the epoch. No metrics. Variants a-d use minilearn's `SGD` (so only the loop differs, not the
optimiser's arithmetic); e uses fastai's own `SGD`, and trains on minilearn's `DataLoaders` (fastai
accepts them), so its ratio to c is the cost of fastai's Learner, not of fastai's data pipeline.
Every variant starts from the same initial weights and is warmed up by one untimed epoch.

It also measures `import` times, peak memory on W3a (a fresh process per variant) and the host
synchronisations per epoch, and writes everything to a markdown file (default
`benchmarks/results.md`). Run `python benchmarks/overhead.py --help` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader as TorchDataLoader, TensorDataset

import minilearn
from minilearn import SGD, Adam, DataLoaders, Learner, mnist_loss

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "a": "hand loop, sliced tensors",
    "b": "hand loop, torch DataLoader",
    "c": "minilearn Learner, no bar",
    "d": "minilearn Learner, bar",
    "e": "fastai Learner, no bar",
}
BETA = 0.98  # fastai's smoothing of the train loss


@dataclass(frozen=True)
class Workload:
    """One model, data shape and optimiser setting to time an epoch of."""

    name: str
    what: str
    n_train: int
    n_valid: int
    bs: int
    hidden: int | None  # None: a linear model
    n_out: int
    lr: float
    mom: float
    arch: str = "mlp"  # "mlp" (a linear model when hidden is None) or "cnn"
    opt: str = "sgd"   # "sgd" (with `mom`) or "adam" (fastai's defaults)

    def sizes(self, scale: float) -> tuple[int, int]:
        """The sample counts at `scale` (at least 2 each)."""
        return max(2, round(self.n_train * scale)), max(2, round(self.n_valid * scale))

    def n_batches(self, scale: float) -> int:
        """Training plus validation batches in one epoch."""
        n, nv = self.sizes(scale)
        return math.ceil(n / self.bs) + math.ceil(nv / self.bs)

    def loss_func(self):
        return mnist_loss if self.n_out == 1 else nn.CrossEntropyLoss()

    def model(self) -> nn.Module:
        if self.arch == "cnn":
            def block(c_in, c_out):
                return [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            return nn.Sequential(*block(1, 8), *block(8, 16), *block(16, 32), nn.Flatten(),
                                 nn.Linear(32 * 4 * 4, self.n_out))
        if self.hidden is None:
            return nn.Linear(28 * 28, self.n_out)
        return nn.Sequential(nn.Linear(28 * 28, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.n_out))


WORKLOADS = {
    "W1": Workload("W1", "linear 784->1, bs 256, SGD lr 1", 12396, 2038, 256, None, 1, 1.0, 0.0),
    "W2": Workload("W2", "784-30-1 ReLU, bs 256, SGD lr 0.1", 12396, 2038, 256, 30, 1, 0.1, 0.0),
    "W3a": Workload("W3a", "784-256-10 ReLU, bs 64, SGD mom 0.9", 60000, 10000, 64, 256, 10, 0.01, 0.9),
    "W3b": Workload("W3b", "784-256-10 ReLU, bs 512, SGD mom 0.9", 60000, 10000, 512, 256, 10, 0.01, 0.9),
    "W4": Workload("W4", "CNN 8-16-32 + BatchNorm, bs 64, Adam", 60000, 10000, 64, None, 10, 1e-3, 0.9,
                   arch="cnn", opt="adam"),
}


# ---------------------------------------------------------------------------------------- data
def make_data(w: Workload, scale: float, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Synthetic MNIST-shaped data (pixels in [0, 1)) with labels from a random linear teacher."""
    g = torch.Generator().manual_seed(seed)
    n, nv = w.sizes(scale)
    x, vx = torch.rand(n, 28 * 28, generator=g), torch.rand(nv, 28 * 28, generator=g)
    teacher = torch.randn(28 * 28, w.n_out, generator=g)

    def label(t):
        scores = (t - 0.5) @ teacher
        return (scores > 0).long() if w.n_out == 1 else scores.argmax(dim=1)  # (n, 1) 0/1 or (n,) classes

    if w.arch == "cnn":  # the same pixels as images
        return x.view(-1, 1, 28, 28), label(x), vx.view(-1, 1, 28, 28), label(vx)
    return x, label(x), vx, label(vx)


# ---------------------------------------------------------------------------------------- variants
def opt_func(w: Workload):
    """minilearn's optimiser for the workload (SGD with its momentum, or Adam), called as `opt_func(params, lr=...)`."""
    if w.opt == "adam":
        return Adam
    return functools.partial(SGD, mom=w.mom) if w.mom else SGD


def sliced_batches(x: torch.Tensor, y: torch.Tensor, bs: int, perm: torch.Tensor | None = None):
    """Batches by slicing (valid) or by slicing a permutation and indexing (train)."""
    for i in range(0, len(x), bs):
        if perm is None:
            yield x[i:i + bs], y[i:i + bs]
        else:
            idx = perm[i:i + bs]
            yield x[idx], y[idx]


def hand_epoch(model: nn.Module, opt, loss_func, train_batches, valid_batches, device: torch.device) -> tuple:
    """One epoch written by hand, doing what the Learner does: the step, each batch's loss kept on
    the device, the size-weighted valid loss on the device, one host sync at the end, where the
    losses are smoothed (fastai's EMA, debiased) on the host."""
    move = device.type != "cpu"
    model.train()
    batch_losses = []
    for xb, yb in train_batches:
        if move:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = loss_func(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()
        batch_losses.append(loss.detach())  # what Recorder keeps per batch
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for xb, yb in valid_batches:
            if move:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = loss_func(model(xb), yb)
            total = total + loss.float() * len(yb)
            n += len(yb)
    ema, smoothed = 0.0, []
    for i, l in enumerate(torch.stack(batch_losses).float().tolist(), 1):  # the epoch's one host sync
        ema = BETA * ema + (1 - BETA) * l
        smoothed.append(ema / (1 - BETA**i))
    return smoothed[-1], (total / n).item()


def make_variant(key: str, w: Workload, data, init_state: dict, device: torch.device):
    """A function running one epoch of variant `key`, with its own model copy and optimiser."""
    model = w.model()
    model.load_state_dict(init_state)
    model.to(device)
    loss_func = w.loss_func()
    x, y, vx, vy = data
    if key in ("a", "b"):
        opt = opt_func(w)(list(model.parameters()), lr=w.lr)
        if key == "a":
            xd, yd, vxd, vyd = (t.to(device) for t in data)
            g = torch.Generator().manual_seed(0)

            def epoch():
                perm = torch.randperm(len(xd), generator=g).to(device)
                return hand_epoch(model, opt, loss_func, sliced_batches(xd, yd, w.bs, perm),
                                  sliced_batches(vxd, vyd, w.bs), device)
        else:
            pin = device.type == "cuda"  # torch's usual recipe: CPU tensors, pinned, moved per batch
            train_dl = TorchDataLoader(TensorDataset(x, y), batch_size=w.bs, shuffle=True, pin_memory=pin,
                                       generator=torch.Generator().manual_seed(0))
            valid_dl = TorchDataLoader(TensorDataset(vx, vy), batch_size=w.bs, shuffle=False, pin_memory=pin)

            def epoch():
                return hand_epoch(model, opt, loss_func, train_dl, valid_dl, device)
        return epoch
    dls = DataLoaders.from_tensors(*(t.to(device) for t in data), bs=w.bs, seed=0)
    if key in ("c", "d"):
        learn = Learner(dls, model, loss_func, opt_func=opt_func(w), lr=w.lr)
        learn.progress.show_bar = key == "d"

        def epoch():
            learn.fit(1)
        return epoch
    if key == "e":
        fastai_learner, fastai_optim, fastai_progress = import_fastai()
        if w.opt == "adam":
            fa_opt = fastai_optim.Adam
        else:
            fa_opt = functools.partial(fastai_optim.SGD, mom=w.mom) if w.mom else fastai_optim.SGD
        learn = fastai_learner.Learner(dls, model, loss_func=loss_func, opt_func=fa_opt, lr=w.lr)
        learn.remove_cb(fastai_progress)
        learn.logger = lambda *args: None  # without its progress callback fastai prints raw lists

        def epoch():
            learn.fit(1)
        return epoch
    raise ValueError(f"variant: expected one of {list(VARIANTS)}, got {key!r}")


def import_fastai():
    """fastai's Learner module, optimiser module and ProgressCallback, imported quietly (its import warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import fastai.callback.progress
        import fastai.learner
        import fastai.optimizer
    return fastai.learner, fastai.optimizer, fastai.callback.progress.ProgressCallback


def fastai_available() -> bool:
    try:
        import_fastai()
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def quiet(stderr_too: bool):
    """Send stdout (the Learner's table) and, for the bar variant, stderr (tqdm) to os.devnull."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        if stderr_too:
            with contextlib.redirect_stderr(null):
                yield
        else:
            yield


def run_epochs(epoch, key: str, k: int, device: torch.device) -> float:
    """Seconds per epoch over `k` consecutive epochs of one variant."""
    gc.collect()
    with quiet(stderr_too=key == "d"):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(k):
            epoch()
        sync(device)
        return (time.perf_counter() - t0) / k


def time_workload(w: Workload, keys: list[str], reps: int, scale: float, device: torch.device,
                  min_rep_s: float, log) -> tuple[dict[str, list[float]], int]:
    """Per-epoch seconds of each variant, `reps` rounds interleaved round-robin (order rotated)."""
    torch.manual_seed(0)
    init_state = {k: v.clone() for k, v in w.model().state_dict().items()}
    data = make_data(w, scale)
    epochs = {key: make_variant(key, w, data, init_state, device) for key in keys}
    for key in keys:  # warm-up: first-call costs (allocations, lazy imports, optimiser state)
        run_epochs(epochs[key], key, 1, device)
    # epochs per repetition: enough that a repetition of the reference lasts `min_rep_s`
    t_ref = run_epochs(epochs[keys[0]], keys[0], 1, device)
    k = max(1, math.ceil(min_rep_s / max(t_ref, 1e-6))) if min_rep_s > 0 else 1
    times: dict[str, list[float]] = {key: [] for key in keys}
    for r in range(reps):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for key in order:
            times[key].append(run_epochs(epochs[key], key, k, device))
        log(f"  {w.name} round {r + 1}/{reps}: " + "  ".join(f"{key} {times[key][-1]:.4f}s" for key in keys))
    return times, k


# ---------------------------------------------------------------------------------------- host syncs
SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__index__", "__bool__")


@contextlib.contextmanager
def counting_host_syncs():
    """Count calls of the Tensor methods that copy a value to the host (as tests/test_learner.py)."""
    calls: list[str] = []
    saved = {}
    for name in SYNC_METHODS:
        saved[name] = torch.Tensor.__dict__.get(name)
        original = getattr(torch.Tensor, name)

        def counting(self, *a, _orig=original, _name=name, **kw):
            calls.append(_name)
            return _orig(self, *a, **kw)

        setattr(torch.Tensor, name, counting)
    try:
        yield calls
    finally:
        for name, method in saved.items():
            if method is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)


def count_host_syncs(keys: list[str], scale: float, device: torch.device) -> dict:
    """Host-sync calls in one epoch of W1 (after a warm-up epoch), per variant, at W1's batch size and
    at a quarter of it: a sync per batch shows as a count that grows with the number of batches."""
    w = WORKLOADS["W1"]
    scale = max(scale, 8 * w.bs / w.n_train)  # at least 8 training batches, even in a smoke run
    torch.manual_seed(0)
    init_state = w.model().state_dict()
    data = make_data(w, scale)
    sizes = (w.bs, max(1, w.bs // 4))
    out = {"bs": sizes, "n_batches": [], "n_train_batches": [], "counts": {k: {} for k in keys}}
    for bs in sizes:
        wb = dataclasses.replace(w, bs=bs)
        out["n_batches"].append(wb.n_batches(scale))
        out["n_train_batches"].append(math.ceil(wb.sizes(scale)[0] / bs))
        for key in keys:
            epoch = make_variant(key, wb, data, init_state, device)
            with quiet(stderr_too=key == "d"):
                epoch()
                with counting_host_syncs() as calls:
                    epoch()
            c = out["counts"][key].setdefault("total", [])
            c.append(len(calls))
            out["counts"][key].setdefault("by_method", []).append(dict(sorted(_tally(calls).items())))
            if device.type == "cuda":  # every sync torch knows of, not only the Python-level ones
                with quiet(stderr_too=key == "d"), warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    try:
                        epoch()
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                out["counts"][key].setdefault("cuda_sync_warnings", []).append(
                    sum("synchroniz" in str(c.message) for c in caught))
    return out


def _tally(names: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------- memory
def _proc_status(field: str) -> int | None:
    """A `kB` field of /proc/self/status (Linux), or None."""
    try:
        m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def memory_child(key: str, workload: str, scale: float, device: torch.device) -> dict:
    """In a fresh process: peak RSS (and CUDA memory) while one variant trains two epochs."""
    w = WORKLOADS[workload]
    torch.manual_seed(0)
    init_state = w.model().state_dict()
    data = make_data(w, scale)
    epoch = make_variant(key, w, data, init_state, device)
    gc.collect()
    base_kb = _proc_status("VmRSS")
    try:  # reset the high-water mark to the current RSS, so data generation's temporaries don't count
        Path("/proc/self/clear_refs").write_text("5")
        method = "VmHWM after /proc/self/clear_refs reset"
    except OSError:
        method = "ru_maxrss (includes setup)"
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_base = torch.cuda.memory_allocated()
    with quiet(stderr_too=True):
        for _ in range(2):  # the first epoch makes the optimiser state; the peak covers both
            epoch()
    sync(device)
    if method.startswith("VmHWM") and _proc_status("VmHWM") is not None:
        peak_kb = _proc_status("VmHWM")
    else:
        import resource
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"variant": key, "base_mb": (base_kb or 0) / 1024, "peak_mb": peak_kb / 1024, "method": method}
    if device.type == "cuda":
        out["cuda_base_mb"] = cuda_base / 2**20
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def measure_memory(keys: list[str], workload: str, scale: float, device: torch.device, log) -> list[dict]:
    """Run `memory_child` for each variant in its own process (side by side on a CPU: RSS is per process)."""
    def start(key):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-child", key, "--workloads", workload,
               "--scale", str(scale), "--device", str(device), "--threads", str(torch.get_num_threads())]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)

    def finish(key, proc):
        out, err = proc.communicate()
        line = next((l for l in out.splitlines() if l.startswith("MEMORY_JSON ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"memory measurement of variant {key} failed:\n{out}\n{err}")
        return json.loads(line[len("MEMORY_JSON "):])

    if device.type == "cpu":
        procs = {key: start(key) for key in keys}
        results = [finish(key, proc) for key, proc in procs.items()]
    else:  # one at a time on a GPU: CUDA memory is shared between processes
        results = [finish(key, start(key)) for key in keys]
    for r in results:
        log(f"  memory {workload} {r['variant']}: peak {r['peak_mb']:.1f} MB (+{r['peak_mb'] - r['base_mb']:.1f} MB "
            "over the set-up)")
    return results


# ---------------------------------------------------------------------------------------- imports
def measure_imports(reps: int, with_fastai: bool, log) -> dict:
    """Wall time of `python -c "import X"` in fresh processes, interleaved (order rotated each round);
    minilearn's own share from `python -X importtime`; and the optional heavy modules it pulls in."""
    stmts = {"torch": "import torch", "minilearn": "import minilearn"}
    if with_fastai:
        stmts["fastai.basics"] = "import warnings; warnings.simplefilter('ignore'); import fastai.basics"
    names = list(stmts)
    times: dict[str, list[float]] = {k: [] for k in stmts}
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", stmts[name]], check=True, cwd=ROOT, capture_output=True)
            times[name].append(time.perf_counter() - t0)
    heavy = ["matplotlib", "torchvision", "IPython", "pandas", "scipy", "PIL", "numpy", "fastcore", "tqdm",
             "fastai", "sklearn", "torchmetrics"]
    probe = f"import sys, minilearn; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    # `-X importtime` lines: "import time: self [us] | cumulative | name" (top-level modules unindented)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", probe], check=True, cwd=ROOT,
                          capture_output=True, text=True)
    loaded = proc.stdout.split()
    cumulative = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if m:
            cumulative[m.group(3)] = (int(m.group(1)), len(m.group(2)))
    total_us = sum(us for name, (us, depth) in cumulative.items() if depth == 0 and name != "site")
    torch_us = cumulative.get("torch", (0, 0))[0]
    log("  import: " + "  ".join(f"{k} {statistics.median(v):.3f}s" for k, v in times.items()))
    return {"times": times, "loaded_by_minilearn": loaded,
            "importtime": {"total_s": total_us / 1e6, "torch_s": torch_us / 1e6}}


# ---------------------------------------------------------------------------------------- report
def summarise(times: dict[str, list[float]]) -> dict[str, dict]:
    """Median, min, max per variant; against (a) and (c): the ratio of the medians, and the paired
    ratio, the median over rounds of the round's ratio (robust to the load changing between rounds)."""
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {}
    for k, v in times.items():
        row = {"median": med[k], "min": min(v), "max": max(v)}
        for ref in ("a", "c"):
            if ref in times:
                row[f"ratio_{ref}"] = med[k] / med[ref]
                row[f"paired_{ref}"] = statistics.median(x / r for x, r in zip(v, times[ref]))
        out[k] = row
    return out


def table_lines(results: dict, scale: float) -> list[str]:
    nan = float("nan")
    head = ("| workload | variant | median s/epoch | min - max | (a) ratio | (a) paired | (c) ratio | (c) paired "
            "| extra us/batch vs (a) |")
    lines = [head, "|" + "---|" * 9]
    for wname, (summary, _) in results.items():
        nb = WORKLOADS[wname].n_batches(scale)
        for k, s in summary.items():
            extra = (s["median"] - summary["a"]["median"]) / nb * 1e6 if "a" in summary else nan
            lines.append(
                f"| {wname} | ({k}) {VARIANTS[k]} | {s['median']:.4f} | {s['min']:.4f} - {s['max']:.4f} "
                f"| {s.get('ratio_a', nan):.3f} | {s.get('paired_a', nan):.3f} "
                f"| {s.get('ratio_c', nan):.3f} | {s.get('paired_c', nan):.3f} | {extra:+.0f} |")
    return lines


def targets(results: dict, imports: dict | None, memory: list[dict] | None, syncs: dict | None) -> list[str]:
    """Issue 7's targets, each with its measured value and PASS / MISS (timings: on the paired ratio)."""
    out = []

    def check(name, ok, value):
        out.append(f"- {'PASS' if ok else 'MISS'}: {name} — {value}")

    def ratio(s, k, ref):
        return s[k][f"paired_{ref}"], f"paired {s[k][f'paired_{ref}']:.3f} (ratio of medians {s[k][f'ratio_{ref}']:.3f})"

    for wname, (s, _) in results.items():
        if "a" in s and "c" in s:
            r, text = ratio(s, "c", "a")
            limit = 1.05 if wname == "W4" else 1.10  # W4: issue 14's bound
            check(f"{wname} (c)/(a) <= {limit:.2f}", r <= limit, text)
        if "a" in s and "d" in s:
            r, text = ratio(s, "d", "a")
            check(f"{wname} (d)/(a) <= 1.15", r <= 1.15, text)
        if wname in ("W1", "W2") and "c" in s and "e" in s:
            r, text = ratio(s, "e", "c")
            check(f"{wname} (e)/(c) >= 2", r >= 2, text)
    if imports:
        t = {k: statistics.median(v) for k, v in imports["times"].items()}
        r = t["minilearn"] / t["torch"]
        it = imports["importtime"]
        check("import minilearn <= 1.15 x import torch", r <= 1.15,
              f"{r:.2f}x by wall time (-X importtime: {it['total_s']:.3f} s against torch's {it['torch_s']:.3f} s)")
    if memory:
        m = {d["variant"]: d for d in memory}
        if "a" in m and "c" in m:
            r = m["c"]["peak_mb"] / m["a"]["peak_mb"]
            check("W3a peak RSS of (c) within 10% of (a)", r <= 1.10, f"{r:.3f}")
            if "cuda_peak_mb" in m["a"]:
                r = m["c"]["cuda_peak_mb"] / m["a"]["cuda_peak_mb"]
                check("W3a peak CUDA memory of (c) within 10% of (a)", r <= 1.10, f"{r:.3f}")
    if syncs and "c" in syncs["counts"]:
        c = syncs["counts"]["c"]
        same = len(set(c["total"])) == 1 and len(set(c.get("cuda_sync_warnings", [0]))) == 1
        check("no per-batch host sync in (c) (the same count at 4x the batches)", same,
              " and ".join(f"{n} calls in {b} batches" for n, b in zip(c["total"], syncs["n_batches"]))
              + (f"; CUDA sync warnings {c['cuda_sync_warnings']}" if "cuda_sync_warnings" in c else ""))
    return out


def write_markdown(path: Path, args, results, imports, memory, syncs, load_before, load_after, device) -> None:
    """results.md: machine, versions, settings, the table, targets, imports, memory, host syncs."""
    try:
        import fastai
        fastai_version = fastai.__version__
    except ImportError:
        fastai_version = "not installed"
    import tqdm
    lines = [
        f"# minilearn loop overhead ({device.type})", "",
        f"Written by `python benchmarks/overhead.py {' '.join(sys.argv[1:])}` on "
        f"{datetime.datetime.now().astimezone().isoformat(timespec='seconds')}.", "",
        "## Machine and versions",
        f"- platform: {platform.platform()}; processor: {platform.processor() or platform.machine()}; "
        f"CPUs: {os.cpu_count()}; torch threads: {torch.get_num_threads()}"
        + (" (set by --threads)" if args.threads is not None else " (torch's default)"),
        f"- load average (1, 5, 15 min) before: {load_before}; after: {load_after}",
    ]
    if device.type == "cuda":
        lines.append(f"- GPU: {torch.cuda.get_device_name(device)}")
    lines += [
        f"- python {platform.python_version()}, torch {torch.__version__}, fastai {fastai_version}, "
        f"minilearn {minilearn.__version__}, tqdm {tqdm.__version__}",
        f"- repetitions: {args.reps} (interleaved round-robin, order rotated each round); scale {args.scale}; "
        f"epochs per repetition: " + ", ".join(f"{w} {k}" for w, (_, k) in results.items()), "",
        "## Seconds per epoch (train + valid)", "",
        *table_lines(results, args.scale), "",
        "(x) ratio = median / median of (x); (x) paired = median over rounds of the round's time / (x)'s time "
        "in that round (the targets use it: it follows the load as it changes from round to round); "
        "extra us/batch = (median - median of (a)) / batches per epoch (train + valid).", "",
        "Workloads: " + "; ".join(f"{w.name} {w.what}, {w.sizes(args.scale)[0]} / {w.sizes(args.scale)[1]} samples"
                                  for w in WORKLOADS.values() if w.name in results), "",
        "## Targets (issue 7)", "", *targets(results, imports, memory, syncs), "",
    ]
    if imports:
        t = imports["times"]
        lines += ["## Import time (fresh process, wall seconds)", "",
                  "| command | median | min - max | ratio to torch |", "|---|---|---|---|"]
        for k, v in t.items():
            lines.append(f"| `python -c \"import {k}\"` | {statistics.median(v):.3f} | {min(v):.3f} - {max(v):.3f} "
                         f"| {statistics.median(v) / statistics.median(t['torch']):.2f} |")
        it = imports["importtime"]
        lines += ["", f"{len(t['torch'])} runs each, interleaved, order rotated. `python -X importtime -c \"import "
                      f"minilearn\"`: {it['total_s']:.3f} s in all, of which torch {it['torch_s']:.3f} s, so minilearn "
                      f"and the rest of its imports add {it['total_s'] - it['torch_s']:.3f} s. Optional modules "
                      f"loaded by `import minilearn`: {', '.join(imports['loaded_by_minilearn']) or 'none'}.", ""]
    if memory:
        lines += [f"## Peak memory, {args.memory_workload} (a fresh process per variant, two epochs)", "",
                  "| variant | RSS after set-up MB | peak RSS MB | peak - set-up MB | peak / (a) |"
                  + (" CUDA peak MB | CUDA peak / (a) |" if "cuda_peak_mb" in memory[0] else ""),
                  "|---|---|---|---|---|" + ("---|---|" if "cuda_peak_mb" in memory[0] else "")]
        a = next((m for m in memory if m["variant"] == "a"), memory[0])
        for m in memory:
            row = (f"| ({m['variant']}) {VARIANTS[m['variant']]} | {m['base_mb']:.1f} | {m['peak_mb']:.1f} "
                   f"| {m['peak_mb'] - m['base_mb']:.1f} | {m['peak_mb'] / a['peak_mb']:.3f} |")
            if "cuda_peak_mb" in m:
                row += f" {m['cuda_peak_mb']:.1f} | {m['cuda_peak_mb'] / a['cuda_peak_mb']:.3f} |"
            lines.append(row)
        lines += ["", f"Method: {memory[0]['method']}. The set-up (imports, data, model, optimiser, loaders) "
                      "is in every process before the peak is reset; the peak then covers two epochs.", ""]
    if syncs:
        cuda = device.type == "cuda"
        lines += ["## Host synchronisations in one epoch of W1", "",
                  "After a warm-up epoch, at bs " + " and at bs ".join(
                      f"{bs} ({nt} train + {nb - nt} valid batches)"
                      for bs, nb, nt in zip(syncs["bs"], syncs["n_batches"], syncs["n_train_batches"])) + ".", "",
                  "| variant | calls at bs " + " | calls at bs ".join(str(b) for b in syncs["bs"]) + " | by method |"
                  + (" CUDA sync warnings |" if cuda else ""),
                  "|---|" + "---|" * len(syncs["bs"]) + "---|" + ("---|" if cuda else "")]
        for k, c in syncs["counts"].items():
            row = f"| ({k}) {VARIANTS[k]} | " + " | ".join(str(n) for n in c["total"]) + f" | {c['by_method'][0]} |"
            if "cuda_sync_warnings" in c:
                row += f" {c['cuda_sync_warnings']} |"
            lines.append(row)
        lines += ["", "Counted by wrapping `torch.Tensor." + "`, `".join(SYNC_METHODS) + "` for one epoch"
                  + (", and with `torch.cuda.set_sync_debug_mode('warn')`" if cuda else "")
                  + ". A count that does not grow with the number of batches means no per-batch sync: (c) should "
                  "show the same handful (the table's numbers) at both batch sizes.", ""]
    lines += ["## Method", "",
              "Variants a-d use minilearn's `SGD`; e uses fastai's `SGD` on minilearn's `DataLoaders`. Each "
              "starts from the same weights, gets one untimed warm-up epoch, then the rounds run every variant "
              "once in rotated order. stdout goes to os.devnull while timing (the Learner prints its table); "
              "for (d) stderr too, so tqdm draws its bar into os.devnull (cheaper than a real terminal). "
              "(c) and (d) time `learn.fit(1)`, so each epoch includes a fit's set-up.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions per variant (default 5)")
    p.add_argument("--workloads", default="W1,W2,W3a,W3b,W4", help="comma-separated subset of " + ",".join(WORKLOADS))
    p.add_argument("--variants", default="a,b,c,d,e", help="comma-separated subset of a,b,c,d,e (a is the reference)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the sample counts (e.g. 0.01 for a smoke run)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", default=None, help="markdown file to write (default benchmarks/results.md, "
                                               "benchmarks/results-cuda.md on a GPU)")
    p.add_argument("--no-fastai", action="store_true", help="skip variant e and fastai's import time")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads(N) (default: torch's own choice); 1 avoids OpenMP threads "
                        "waiting on a busy shared machine")
    p.add_argument("--min-rep-s", type=float, default=0.25,
                   help="run enough consecutive epochs per repetition that one of (a) lasts this long "
                        "(reported per epoch; 0: one epoch per repetition)")
    p.add_argument("--import-reps", type=int, default=7, help="runs of each import command (0: skip)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--memory-workload", default="W3a", help="workload of the memory measurement (default W3a)")
    p.add_argument("--no-syncs", action="store_true", help="skip counting host synchronisations")
    p.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in args.workloads if w not in WORKLOADS]
    if bad or not args.workloads:
        p.error(f"--workloads: expected names from {list(WORKLOADS)}, got {bad or 'none'}")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if any(v not in VARIANTS for v in args.variants) or "a" not in args.variants:
        p.error(f"--variants: expected a subset of {list(VARIANTS)} that includes a, got {args.variants}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads: expected an int >= 1, got {args.threads}")
    if args.reps < 1:
        p.error(f"--reps: expected an int >= 1, got {args.reps}")
    if not args.scale > 0:
        p.error(f"--scale: expected a number > 0, got {args.scale}")
    if args.memory_workload not in WORKLOADS:
        p.error(f"--memory-workload: expected one of {list(WORKLOADS)}, got {args.memory_workload}")
    try:
        args.device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device: expected cpu or cuda, got {args.device}")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if args.out is None:
        args.out = "benchmarks/results.md" if args.device.type == "cpu" else f"benchmarks/results-{args.device.type}.md"
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        print("MEMORY_JSON " + json.dumps(memory_child(args.memory_child, args.workloads[0], args.scale, args.device)))
        return
    log = functools.partial(print, flush=True)
    keys = list(args.variants)
    if "e" in keys and (args.no_fastai or not fastai_available()):
        log("fastai: skipped" + ("" if args.no_fastai else " (not installed)"))
        keys.remove("e")
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, load {load_before}")

    imports = measure_imports(args.import_reps, "e" in keys, log) if args.import_reps > 0 else None
    results = {}
    for wname in args.workloads:
        w = WORKLOADS[wname]
        log(f"{wname}: {w.what}, {w.sizes(args.scale)[0]} / {w.sizes(args.scale)[1]} samples, "
            f"{w.n_batches(args.scale)} batches an epoch")
        times, k = time_workload(w, keys, args.reps, args.scale, args.device, args.min_rep_s, log)
        results[wname] = (summarise(times), k)
    memory = None if args.no_memory else measure_memory(keys, args.memory_workload, args.scale, args.device, log)
    syncs = None if args.no_syncs else count_host_syncs(keys, args.scale, args.device)
    load_after = ", ".join(f"{x:.2f}" for x in os.getloadavg())

    log("")
    for line in table_lines(results, args.scale):
        log(line)
    log("")
    for line in targets(results, imports, memory, syncs):
        log(line)
    out = Path(args.out)
    out = out if out.is_absolute() else Path.cwd() / out
    write_markdown(out, args, results, imports, memory, syncs, load_before, load_after, args.device)
    log(f"\nwrote {out}")


if __name__ == "__main__":
    main()
