"""A notebook as a user sees it: executed, rendered to HTML and opened in a real headless browser
(Debian's `chromium`). The page must show the metric table, the progress bar in its final state
and every plot. Under CI (`CI=true`) the browser and nbconvert must be there: `.ci/run` installs
them, and this test fails rather than skips without them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

CELLS = [
    "import torch\nfrom torch import nn\nfrom minilearn import DataLoaders, Learner, accuracy\n"
    "x = torch.randn(600, 5); y = (x[:, 0] > 0).long()\n"
    "dls = DataLoaders.from_tensors(x[:500], y[:500], x[500:], y[500:], bs=16, seed=0)\n"
    "learn = Learner(dls, nn.Linear(5, 2), nn.CrossEntropyLoss(), lr=0.1, metrics=accuracy)\n"
    "learn.fit_one_cycle(3)",
    "learn.recorder.plot_loss();\nlearn.recorder.plot_sched()",
]


def _needed(what: str, available: bool) -> None:
    if not available:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{what} is needed under CI (.ci/run installs it)")
        pytest.skip(f"{what} is not installed")


def test_an_executed_notebook_shows_table_bar_and_plots_in_a_browser(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    try:
        from nbconvert import HTMLExporter
    except ImportError:
        HTMLExporter = None
    _needed("nbconvert", HTMLExporter is not None)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    _needed("chromium", browser is not None)
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    NotebookClient(nb, timeout=180, kernel_name="python3").execute()
    page = tmp_path / "page.html"
    body, _ = HTMLExporter().from_notebook_node(nb)
    page.write_text(body)

    def chromium(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                               *args, page.as_uri()], capture_output=True, text=True, timeout=120)

    dom = chromium("--dump-dom").stdout
    assert "<th>accuracy</th>" in dom and dom.count("<tr>") == 3  # the header, and a row for each of the three epochs
    bars = re.findall(r"<progress[^>]*>", dom)
    assert len(bars) == 1 and 'value="1"' in bars[0] and 'max="1"' in bars[0]  # one bar, full: its final state,
    assert "3 epochs in" in dom                                                  # not a dead widget
    assert "Error displaying widget" not in dom and "model not found" not in dom
    plots = re.findall(r'<img[^>]*src="data:image/png;base64,', dom)  # (the page's own style has a PNG too)
    assert len(plots) == 2  # each of the two plot calls, once
    shot = tmp_path / "page.png"
    chromium(f"--screenshot={shot}", "--window-size=1000,1400")
    assert shot.is_file() and shot.stat().st_size > 20_000  # a page that drew something
