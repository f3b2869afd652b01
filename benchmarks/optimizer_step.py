"""The time of one optimiser step: minilearn's step functions against torch.optim and fastai.

One process times ONE `opt.step()` (gradients already present, every variant warmed up) of five
variants, repetitions interleaved round-robin (the machines are shared and noisy, so a slow
spell hits every variant alike):

    ml       minilearn's optimiser, fast path (`multi_tensor=True`, the default: a group's
             parameters laid end to end in flat runs of at most FLAT_RUN_NUMEL numbers, each
             step function run once per run)
    ml-loop  minilearn's optimiser, per-parameter loop (`multi_tensor=False`)
    foreach  torch.optim with `foreach=True`
    fused    torch.optim with `fused=True` (where torch supports it for that optimiser and device)
    fastai   fastai's optimiser (when fastai is installed)

for two optimisers with fastai's settings,

    SGD   lr 1e-2, momentum 0.9, weight decay 1e-2 (minilearn and fastai: decoupled, their
          default; torch.optim.SGD has only L2 weight decay, the same work per number)
    Adam  lr 1e-3, mom 0.9, sqr_mom 0.99, eps 1e-5, wd 1e-2 decoupled (fastai's defaults), that is
          torch.optim.AdamW(betas=(0.9, 0.99), eps=1e-5, weight_decay=1e-2)

over two parameter sets:

    a  200 tensors of 64 floats each (12800 numbers: a step is all per-tensor overhead)
    b  40 conv blocks, each a 3x3 conv weight (c, c, 3, 3) with BatchNorm weight and bias (c,),
       10 blocks each at c = 32, 48, 64, 96: 120 tensors, 1502400 numbers

Every variant gets its own copy of the same parameters and the same gradients. Each repetition
times k consecutive steps, k chosen per variant so that a repetition lasts at least --min-rep-s
seconds (times are per step); on CUDA the device is synchronised before and after. Reported: the
median and min-max per step, the ratio to torch fused and to torch foreach (of the medians, and
paired: the median over rounds of the round's ratio), fastai's time over each variant's, and
the goals (minilearn <= 1.0x fused on a, <= 1.3x on b, >= 3x faster than fastai on both)
judged on the paired ratios. A consistency check first steps fresh copies and checks that
minilearn's fast path and loop give torch.equal parameters and state (the process exits 1 after
writing the results if they don't).

Writes a markdown file (default `benchmarks/optimizer_step_results.md`). Run
`python benchmarks/optimizer_step.py --help` for the options.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import math
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import minilearn
import minilearn.optim

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "ml": "minilearn fast path",
    "ml-loop": "minilearn per-parameter loop",
    "foreach": "torch.optim foreach",
    "fused": "torch.optim fused",
    "fastai": "fastai optimizer",
}
WARMUP_STEPS = 3  # untimed steps per variant: the state is made, first-call costs paid


# ---------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class OptSetting:
    """One optimiser with its hyper-parameters, in minilearn / fastai names and in torch's."""

    name: str
    what: str
    ours: dict  # minilearn's and fastai's keyword arguments
    torch_cls: str  # the torch.optim class
    torch_kw: dict

    def make(self, key: str, params: list[torch.Tensor]):
        """The optimiser of variant `key` on `params`."""
        if key in ("ml", "ml-loop"):
            cls = minilearn.SGD if self.name == "SGD" else minilearn.Adam
            return cls(params, **self.ours, multi_tensor=key == "ml")
        if key in ("foreach", "fused"):
            return getattr(torch.optim, self.torch_cls)(params, **self.torch_kw, **{key: True})
        if key == "fastai":
            fa = import_fastai_optimizer()
            return (fa.SGD if self.name == "SGD" else fa.Adam)(params, **self.ours)
        raise ValueError(f"variant: expected one of {list(VARIANTS)}, got {key!r}")


OPTIMIZERS = {
    "sgd": OptSetting("SGD", "lr 1e-2, momentum 0.9, wd 1e-2",
                      dict(lr=1e-2, mom=0.9, wd=1e-2), "SGD", dict(lr=1e-2, momentum=0.9, weight_decay=1e-2)),
    "adam": OptSetting("Adam", "lr 1e-3, mom 0.9, sqr_mom 0.99, eps 1e-5, wd 1e-2 decoupled",
                       dict(lr=1e-3, mom=0.9, sqr_mom=0.99, eps=1e-5, wd=1e-2), "AdamW",
                       dict(lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=1e-2)),
}


@dataclass(frozen=True)
class ParamSet:
    """A list of parameter shapes."""

    name: str
    what: str
    shapes: tuple

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def shape_counts(self) -> str:
        """The shapes with their counts, in order of first appearance."""
        counts: dict[tuple, int] = {}
        for s in self.shapes:
            counts[s] = counts.get(s, 0) + 1
        return ", ".join(f"{s} x {n}" for s, n in counts.items())


def _conv_blocks(channels=(32, 48, 64, 96), blocks_each: int = 10) -> tuple:
    return tuple(s for c in channels for _ in range(blocks_each) for s in ((c, c, 3, 3), (c,), (c,)))


SETS = {
    "a": ParamSet("a", "200 tensors of 64 floats", ((64,),) * 200),
    "b": ParamSet("b", "40 blocks of a 3x3 conv weight (c, c, 3, 3) + BatchNorm weight and bias (c,), "
                       "10 blocks each at c = 32, 48, 64, 96 (in that order; per block: conv, BN weight, BN bias)",
                  _conv_blocks()),
}


def import_fastai_optimizer():
    """fastai.optimizer, imported quietly (its import warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import fastai.optimizer
    return fastai.optimizer


def fastai_version() -> str | None:
    try:
        import_fastai_optimizer()
        import fastai
    except ImportError:
        return None
    return fastai.__version__


def fused_support(setting: OptSetting, device: torch.device) -> str | None:
    """None if torch's `fused=True` works for this optimiser on `device`, else why not."""
    p = nn.Parameter(torch.zeros(4, device=device))
    p.grad = torch.ones(4, device=device)
    try:
        setting.make("fused", [p]).step()
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return None


# ---------------------------------------------------------------------------------------- variants
def make_data(pset: ParamSet, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The parameter values and gradients every variant starts from (standard normal, CPU)."""
    g = torch.Generator().manual_seed(seed)
    values = [torch.randn(s, generator=g) for s in pset.shapes]
    grads = [torch.randn(s, generator=g) for s in pset.shapes]
    return values, grads


def make_variant(key: str, setting: OptSetting, data, device: torch.device):
    """Variant `key`'s own copy of the parameters (gradients set) and its optimiser."""
    values, grads = data
    params = [nn.Parameter(v.clone().to(device)) for v in values]
    for p, g in zip(params, grads):
        p.grad = g.clone().to(device)
    return params, setting.make(key, params)


# ---------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_steps(step, k: int, device: torch.device, collect: bool = True) -> float:
    """Seconds per step over `k` consecutive steps (after a garbage collection, if `collect`)."""
    if collect:
        gc.collect()  # cheap: what was alive at set-up is frozen (see `time_combo`)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(k):
        step()
    sync(device)
    return (time.perf_counter() - t0) / k


def steps_per_rep(step, min_rep_s: float, device: torch.device) -> int:
    """Enough consecutive steps that a repetition lasts `min_rep_s` (1 if it is 0), estimated from
    runs of doubling length until one lasts a quarter of it."""
    if min_rep_s <= 0:
        return 1
    n = 1
    while True:
        per_step = run_steps(step, n, device, collect=False)
        if per_step * n >= min_rep_s / 4 or n >= 1 << 20:
            return max(1, math.ceil(min_rep_s / per_step))
        n *= 2


def time_combo(setting: OptSetting, pset: ParamSet, keys: list[str], reps: int, device: torch.device,
               min_rep_s: float, log) -> tuple[dict[str, list[float]], dict[str, int], dict]:
    """Seconds per step of each variant, `reps` rounds interleaved round-robin (order rotated), the
    steps per repetition of each, and what minilearn's fast path did (flat runs)."""
    data = make_data(pset)
    opts = {key: make_variant(key, setting, data, device)[1] for key in keys}
    for key in keys:  # warm-up: the state is made, first-call costs paid
        run_steps(opts[key].step, WARMUP_STEPS, device, collect=False)
    # A full collection walks every object alive (torch, its compiler's modules, fastai: about
    # 0.2 s here); frozen, they are skipped, and the collection before each repetition only
    # clears what the previous one left.
    gc.collect()
    gc.freeze()
    info = {}
    if "ml" in opts:
        ml = opts["ml"]
        runs = getattr(ml, "_runs", None)  # private: read only to report how the fast path laid things out
        info = {"fast_path": ml.fast_path, "runs": None if runs is None else len(runs),
                "run_numel": None if runs is None else [r.param.numel() for r in runs.values()]}
    k = {key: steps_per_rep(opts[key].step, min_rep_s, device) for key in keys}
    times: dict[str, list[float]] = {key: [] for key in keys}
    for r in range(reps):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for key in order:
            times[key].append(run_steps(opts[key].step, k[key], device))
        log(f"  {setting.name} ({pset.name}) round {r + 1}/{reps}: "
            + "  ".join(f"{key} {times[key][-1] * 1e3:.4f}ms" for key in keys))
    gc.unfreeze()
    return times, k, info


# ---------------------------------------------------------------------------------------- consistency
def consistency(setting: OptSetting, pset: ParamSet, keys: list[str], n_steps: int, device: torch.device) -> dict:
    """Fresh copies of every variant, `n_steps` steps each: whether minilearn's fast path and loop
    agree exactly (parameters and state), and the largest difference of each variant's
    parameters from the fast path's."""
    data = make_data(pset)
    made = {key: make_variant(key, setting, data, device) for key in keys}
    for _, opt in made.values():
        for _ in range(n_steps):
            opt.step()
    sync(device)
    out: dict = {"steps": n_steps, "equal": None, "max_diff": {}}
    if "ml" not in made:
        return out
    ps, opt = made["ml"]
    if "ml-loop" in made:
        qs, opt_loop = made["ml-loop"]
        equal = all(torch.equal(p, q) for p, q in zip(ps, qs))
        for p, q in zip(ps, qs):
            s, t = opt.state.get(p, {}), opt_loop.state.get(q, {})
            same_state = s.keys() == t.keys() and all(
                torch.equal(v, t[name]) if isinstance(v, torch.Tensor) else v == t[name] for name, v in s.items())
            equal = equal and same_state
        out["equal"] = equal
    for key, (qs, _) in made.items():
        if key != "ml":
            out["max_diff"][key] = max((p.detach() - q.detach()).abs().max().item() for p, q in zip(ps, qs))
    return out


# ---------------------------------------------------------------------------------------- report
def summarise(times: dict[str, list[float]]) -> dict[str, dict]:
    """Median, min, max per variant; against fused and foreach: the ratio of the medians and the
    paired ratio (median over rounds of the round's ratio); fastai's time over the variant's."""
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {}
    for k, v in times.items():
        row = {"median": med[k], "min": min(v), "max": max(v)}
        for ref in ("fused", "foreach"):
            if ref in times:
                row[f"ratio_{ref}"] = med[k] / med[ref]
                row[f"paired_{ref}"] = statistics.median(x / r for x, r in zip(v, times[ref]))
        if "fastai" in times:
            row["fastai_over"] = med["fastai"] / med[k]
            row["fastai_over_paired"] = statistics.median(f / x for x, f in zip(v, times["fastai"]))
        out[k] = row
    return out


TABLE_HEAD = ("| optimiser | set | variant | median ms/step | min - max ms | steps/rep | / fused | / fused paired "
              "| / foreach | / foreach paired | fastai / this |")


def table_lines(results: dict, headings: bool = False) -> list[str]:
    """One table per optimiser and set (under a `###` heading if `headings`), the rows greppable as
    `| SGD | (a) | (ml) ...`."""
    nan = float("nan")
    lines = []
    for (oname, sname), (summary, k, _) in results.items():
        if lines:
            lines.append("")
        if headings:
            lines += [f"### {OPTIMIZERS[oname].name}, set ({sname}): {SETS[sname].what.split(',')[0]}", ""]
        lines += [TABLE_HEAD, "|" + "---|" * 11]
        for key, s in summary.items():
            lines.append(
                f"| {OPTIMIZERS[oname].name} | ({sname}) | ({key}) {VARIANTS[key]} | {s['median'] * 1e3:.4f} "
                f"| {s['min'] * 1e3:.4f} - {s['max'] * 1e3:.4f} | {k[key]} "
                f"| {s.get('ratio_fused', nan):.3f} | {s.get('paired_fused', nan):.3f} "
                f"| {s.get('ratio_foreach', nan):.3f} | {s.get('paired_foreach', nan):.3f} "
                f"| {s.get('fastai_over', nan):.2f} |")
    return lines


def goals(results: dict) -> list[str]:
    """The goals, each with its measured value, met / not met (on the paired ratios)."""
    out = []

    def check(name, ok, value):
        out.append(f"- {'met' if ok else 'NOT MET'}: {name} — {value}")

    for (oname, sname), (s, _, _) in results.items():
        opt = OPTIMIZERS[oname].name
        if "ml" not in s:
            continue
        limit = {"a": 1.0, "b": 1.3}[sname]
        name = f"{opt} ({sname}) minilearn <= {limit:.1f}x torch fused"
        if "fused" in s:
            r = s["ml"]["paired_fused"]
            check(name, r <= limit, f"paired {r:.3f}x (ratio of medians {s['ml']['ratio_fused']:.3f}x; "
                                    f"{s['ml']['median'] * 1e3:.4f} ms against {s['fused']['median'] * 1e3:.4f} ms)")
        else:
            out.append(f"- not judged: {name} — no fused variant")
        name = f"{opt} ({sname}) minilearn >= 3x faster than fastai"
        if "fastai" in s:
            r = s["ml"]["fastai_over_paired"]
            check(name, r >= 3, f"paired {r:.2f}x (ratio of medians {s['ml']['fastai_over']:.2f}x; "
                                f"{s['fastai']['median'] * 1e3:.4f} ms against {s['ml']['median'] * 1e3:.4f} ms)")
        else:
            out.append(f"- not judged: {name} — fastai not run")
    return out


def consistency_lines(checks: dict) -> list[str]:
    lines = []
    for (oname, sname), c in checks.items():
        opt = OPTIMIZERS[oname].name
        eq = {True: "torch.equal: True", False: "torch.equal: FALSE", None: "not checked (a variant not run)"}[c["equal"]]
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in c["max_diff"].items())
        if oname == "sgd" and ({"foreach", "fused"} & set(c["max_diff"])):
            diffs += " (torch's SGD: L2 weight decay, the others decoupled)"
        lines.append(f"- {opt} ({sname}), {c['steps']} steps: minilearn fast path vs loop (parameters and state) "
                     f"{eq}; max |parameter - fast path's|: {diffs or 'n/a'}")
    return lines


def write_markdown(path: Path, args, results, checks, notes, load_before, load_after, device) -> None:
    """The results file: machine, versions, settings, shapes, consistency, the tables, the goals."""
    fa = fastai_version()
    lines = [
        f"# Optimiser step time ({device.type})", "",
        f"Written by `{' '.join(['python benchmarks/optimizer_step.py', *sys.argv[1:]])}` on "
        f"{datetime.datetime.now().astimezone().isoformat(timespec='seconds')}.", "",
        "## Machine and versions",
        f"- platform: {platform.platform()}; processor: {platform.processor() or platform.machine()}; "
        f"CPUs: {os.cpu_count()}; torch threads: {torch.get_num_threads()} (--threads {args.threads})",
        f"- load average (1, 5, 15 min) before: {load_before}; after: {load_after}",
    ]
    if device.type == "cuda":
        lines.append(f"- GPU: {torch.cuda.get_device_name(device)}")
    lines += [
        f"- python {platform.python_version()}, torch {torch.__version__}, fastai {fa or 'not installed'}, "
        f"minilearn {minilearn.__version__} (FLAT_RUN_NUMEL = {minilearn.optim.FLAT_RUN_NUMEL})", "",
        "## Settings",
        f"- device {device}; repetitions: {args.reps} (interleaved round-robin, order rotated each round); "
        f"at least {args.min_rep_s} s per repetition (steps per repetition per variant in the tables); "
        f"{WARMUP_STEPS} untimed warm-up steps per variant",
    ]
    for oname in args.optimizers:
        o = OPTIMIZERS[oname]
        lines.append(f"- {o.name}: {o.what}; minilearn / fastai `{o.name}(params, "
                     + ", ".join(f"{k}={v}" for k, v in o.ours.items()) + ")`; torch `torch.optim."
                     + f"{o.torch_cls}(params, " + ", ".join(f"{k}={v}" for k, v in o.torch_kw.items())
                     + ", foreach=True | fused=True)`")
    if "sgd" in args.optimizers:
        lines.append("- SGD's weight decay: decoupled (`p *= 1 - lr * wd`) in minilearn and fastai, their default; "
                     "torch.optim.SGD has only L2 (`grad + wd * p`), one multiply-add per number as well, so its "
                     "parameters differ slightly from the others' by design")
    lines += [*(f"- {n}" for n in notes), "", "## Parameter sets", ""]
    for sname in args.sets:
        ps = SETS[sname]
        line = f"- ({sname}) {ps.what}: {len(ps.shapes)} tensors, {ps.numel} floats; shapes {ps.shape_counts()}"
        infos = {o: r[2] for (o, s), r in results.items() if s == sname and r[2]}
        if infos:
            i = next(iter(infos.values()))
            if i["runs"] is not None:
                line += (f". minilearn's fast path: {'on' if i['fast_path'] else 'OFF'}, {i['runs']} flat run(s) "
                         f"of {', '.join(str(n) for n in i['run_numel'])} numbers")
        lines.append(line)
    lines += ["", "## Consistency check", "", *consistency_lines(checks), "",
              "## Milliseconds per step", "", *table_lines(results, headings=True), "",
              "/ fused, / foreach: median / the median of torch fused (foreach); paired: the median over rounds of "
              "the round's time / fused's (foreach's) time in that round (the goals use it: it follows the load "
              "as it changes from round to round); fastai / this: fastai's median / this variant's median "
              "(the speed-up over fastai).", "",
              "## Goals", "", *goals(results), "",
              "## Method", "",
              "Every variant gets its own copy of the same parameters (`nn.Parameter`, standard normal) and the same "
              "gradients (standard normal, set once and never cleared: every step reuses them). After "
              f"{WARMUP_STEPS} untimed steps per variant, k is chosen per variant (runs of doubling length until "
              "one lasts a quarter of --min-rep-s) so that a repetition of k consecutive steps lasts about "
              "--min-rep-s; times are per step. Each round runs every variant once, the order rotated each "
              "round; `gc.collect()` before each repetition (the objects alive after the warm-up frozen with "
              "`gc.freeze()`, so it costs little)"
              + (", `torch.cuda.synchronize()` before and after it" if device.type == "cuda" else "")
              + ". The consistency check steps fresh copies (the same data) a fixed number of times.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------- main
def _names(p, option: str, value: str, allowed) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in names if v not in allowed]
    if bad or not names:
        p.error(f"{option}: expected comma-separated names from {list(allowed)}, got {bad or 'none'}")
    return list(dict.fromkeys(names))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=9, help="interleaved repetitions per variant (default 9)")
    p.add_argument("--min-rep-s", type=float, default=0.2,
                   help="steps per repetition: enough that one lasts this long (default 0.2; 0: one step)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads(N) (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--optimizers", default="sgd,adam", help="comma-separated subset of " + ",".join(OPTIMIZERS))
    p.add_argument("--sets", default="a,b", help="comma-separated subset of " + ",".join(SETS))
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--no-fastai", action="store_true", help="skip the fastai variant")
    p.add_argument("--check-steps", type=int, default=5, help="steps of the consistency check (default 5)")
    p.add_argument("--out", default=None, help="markdown file to write (default benchmarks/optimizer_step_results.md, "
                                               "benchmarks/optimizer_step_results-cuda.md on a GPU)")
    args = p.parse_args(argv)
    args.optimizers = _names(p, "--optimizers", args.optimizers, OPTIMIZERS)
    args.sets = _names(p, "--sets", args.sets, SETS)
    args.variants = _names(p, "--variants", args.variants, VARIANTS)
    if args.reps < 1:
        p.error(f"--reps: expected an int >= 1, got {args.reps}")
    if not args.min_rep_s >= 0:
        p.error(f"--min-rep-s: expected a number >= 0, got {args.min_rep_s}")
    if args.threads < 1:
        p.error(f"--threads: expected an int >= 1, got {args.threads}")
    if args.check_steps < 1:
        p.error(f"--check-steps: expected an int >= 1, got {args.check_steps}")
    try:
        args.device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device: expected cpu or cuda, got {args.device}")
    if args.device.type not in ("cpu", "cuda"):
        p.error(f"--device: expected cpu or cuda, got {args.device}")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if args.out is None:
        name = "optimizer_step_results" + ("" if args.device.type == "cpu" else f"-{args.device.type}")
        args.out = str(ROOT / "benchmarks" / f"{name}.md")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    log = functools.partial(print, flush=True)
    t_start = time.perf_counter()
    notes = []
    keys = list(args.variants)
    if "fastai" in keys and (args.no_fastai or fastai_version() is None):
        why = "--no-fastai" if args.no_fastai else "not installed"
        log(f"fastai: skipped ({why})")
        notes.append(f"fastai: skipped ({why})")
        keys.remove("fastai")
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    log(f"torch {torch.__version__}, fastai {fastai_version() or 'not installed'}, {torch.get_num_threads()} "
        f"threads, device {args.device}, load {load_before}")

    checks, results = {}, {}
    for oname in args.optimizers:
        setting = OPTIMIZERS[oname]
        okeys = list(keys)
        if "fused" in okeys:
            why = fused_support(setting, args.device)
            if why is not None:
                log(f"{setting.name}: torch fused skipped on {args.device.type} ({why})")
                notes.append(f"{setting.name}: torch.optim.{setting.torch_cls}(fused=True) skipped on "
                             f"{args.device.type} ({why})")
                okeys.remove("fused")
        for sname in args.sets:
            pset = SETS[sname]
            c = checks[oname, sname] = consistency(setting, pset, okeys, args.check_steps, args.device)
            log(consistency_lines({(oname, sname): c})[0][2:])
            log(f"{setting.name} ({sname}): {pset.what}; {len(pset.shapes)} tensors, {pset.numel} floats")
            times, k, info = time_combo(setting, pset, okeys, args.reps, args.device, args.min_rep_s, log)
            results[oname, sname] = (summarise(times), k, info)
    load_after = ", ".join(f"{x:.2f}" for x in os.getloadavg())

    log("")
    for line in table_lines(results):
        log(line)
    log("")
    for line in goals(results):
        log(line)
    out = Path(args.out)
    out = out if out.is_absolute() else Path.cwd() / out
    write_markdown(out, args, results, checks, notes, load_before, load_after, args.device)
    log(f"\nwrote {out} ({time.perf_counter() - t_start:.1f} s)")
    if any(c["equal"] is False for c in checks.values()):
        log("consistency check FAILED: minilearn's fast path and loop differ (see above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
