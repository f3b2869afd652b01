"""The LR finder: it leaves no trace, its suggestions, its plot, and the callbacks that sit it out."""

from __future__ import annotations

import math

import pytest
import torch

from minilearn import CSVLogger
from minilearn.callbacks.lr_find import minimum, slide, steep, valley
from synthetic import class_learner, finder_learner


def test_lr_find_leaves_no_trace():
    """lr_find then fit gives exactly the numbers of fit alone (weights, history, data order)."""
    alone = finder_learner()
    with alone.no_logging():
        alone.fit(2)
    probe = finder_learner()
    probe.lr_find(num_it=30, show_plot=False)
    assert probe.opt is None and probe.recorder.values == []
    with probe.no_logging():
        probe.fit(2)
    for a, b in zip(alone.model.parameters(), probe.model.parameters()):
        assert torch.equal(a, b)
    assert probe.recorder.values == alone.recorder.values
    assert probe.recorder.losses == alone.recorder.losses


def test_lr_find_after_training_restores_optimizer_state_and_history():
    learn = finder_learner()
    with learn.no_logging():
        learn.fit(1)
    state = {k: v.clone() for k, v in learn.model.state_dict().items()}
    params = list(learn.model.parameters())
    moms = [learn.opt.state[p]["grad_avg"].clone() for p in params]
    values = [list(r) for r in learn.recorder.values]
    learn.model.train()
    learn.lr_find(num_it=20, show_plot=False)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in state.items())
    assert all(torch.equal(a, learn.opt.state[p]["grad_avg"]) for a, p in zip(moms, params))
    assert learn.opt.hypers[0]["lr"] == 0.05
    assert learn.recorder.values == values
    assert learn.model.training  # the mode it had


def test_lr_find_suggestions_records_and_epochs():
    learn = finder_learner(n=48)  # 3 batches an epoch: lr_find needs several epochs
    sugg = learn.lr_find(num_it=40, end_lr=1.0, stop_div=False, show_plot=False,
                         suggest_funcs=(valley, minimum, steep, slide))
    assert sugg._fields == ("valley", "minimum", "steep", "slide")
    finder = learn.lr_finder
    assert len(finder.lrs) == 40
    assert finder.lrs == pytest.approx([1e-7 * (1.0 / 1e-7) ** (i / 40) for i in range(40)])
    assert all(1e-7 <= v <= 1.0 for v in sugg)
    assert not hasattr(learn, "l_r_finder") and all(type(c).__name__ != "LRFinder" for c in learn.cbs)


def test_lr_find_stops_when_the_loss_diverges():
    learn = finder_learner()
    learn.lr_find(num_it=100, end_lr=1e4, show_plot=False)
    finder = learn.lr_finder
    assert len(finder.losses) < 100
    assert finder.losses[-1] > 4 * min(finder.losses) or not math.isfinite(finder.losses[-1])


def test_lr_find_plot(tmp_path):
    from matplotlib.figure import Figure

    learn = finder_learner()
    path = tmp_path / "plots" / "lr_find.png"
    sugg = learn.lr_find(num_it=30, show_plot=True, plot_path=path)
    assert path.read_bytes()[:4] == b"\x89PNG" and not list(path.parent.glob(".*"))
    fig = learn.plot_lr_find()
    assert isinstance(fig, Figure) and fig.axes[0].get_xscale() == "log"
    labels = [l.get_label() for l in fig.axes[0].get_lines()]
    assert any(l.startswith("valley") for l in labels)
    assert sugg.valley > 0
    # the saved image is cropped to everything drawn, the x-axis label included (it used to be cut)
    from matplotlib.image import imread

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    tight = fig.get_tightbbox(FigureCanvasAgg(fig).get_renderer())
    height_px = imread(path).shape[0]
    assert height_px < fig.get_figheight() * fig.dpi - 5  # cropped, not the whole canvas
    assert abs(height_px - (tight.height + 0.2) * fig.dpi) <= 3  # to the drawing, 0.1 inch padding each side


def test_suggestion_functions_on_a_known_curve():
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    # loss falls steadily from lr 1e-5 to 1e-2, then blows up
    losses = [2.0 if lr < 1e-5 else (2.0 - 0.5 * math.log10(lr / 1e-5) if lr < 1e-2 else 0.5 + 50 * (lr - 1e-2))
              for lr in lrs]
    lr_min, (p_lr, _) = minimum(lrs, losses, 100)
    assert p_lr == pytest.approx(1e-2, rel=0.15) and lr_min == pytest.approx(p_lr / 10)
    lr_valley, _ = valley(lrs, losses, 100)
    assert 1e-5 < lr_valley < 1e-2
    lr_steep, _ = steep(lrs, losses, 100)
    assert lr_steep > 1e-2 * 0.9 or 1e-5 <= lr_steep <= 1e-2
    lr_slide, (_, loss_at) = slide(lrs, losses, 100)
    assert 1e-6 <= lr_slide <= 1 and min(losses) <= loss_at <= max(losses)


def test_lr_find_with_a_csv_logger_attached(tmp_path):
    learn = class_learner(tmp_path)
    logger = learn.add_cb(CSVLogger("h.csv"))
    with learn.no_logging():
        learn.fit(1)
    learn.lr_find(num_it=10, show_plot=False)
    assert len(logger.read_rows()) == 1  # lr_find neither crashed nor wrote over the history
