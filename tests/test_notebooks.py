"""Every notebook in nbs/ is stored without outputs, and runs top to bottom on the real MNIST data.

Notebooks are found by glob, so a new one is tested without touching this file. Executing them
needs nbclient, nbformat and ipykernel (the `dev` extras); a notebook listed in `NEEDS` is skipped
only when the package it compares against is missing.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NBS = Path(__file__).resolve().parents[1] / "nbs"
NOTEBOOKS = sorted(NBS.glob("*.ipynb"))

# Notebooks that need an optional package beyond the dev extras: skipped, with the reason, without it.
NEEDS = {"04_versus_fastai.ipynb": "fastai"}

# Notebooks that train only through learners built without a progress callback, so no table is expected.
QUIET = {"04_versus_fastai.ipynb": "it trains through minilearn.compare's learners, which have no progress table"}

# A cell that trains (`learn.fit(...)`, `fit_one_cycle`, ...) should leave the metric table behind.
CALLS_FIT = re.compile(r"\.fit(?:_one_cycle|_flat_cos|_sgdr)?\(")
# A cell that draws something should leave a PNG behind.
PLOTS = re.compile(r"\b(?:plot_\w+|new_figure|imshow|subplots|show_image|show_batch)\(|\bplt\.")


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs or execution counts; clear them before committing"


@pytest.mark.mnist
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, mnist_root: Path, monkeypatch, request):
    needed = NEEDS.get(path.name)
    if needed == "fastai":
        request.getfixturevalue("fastai")  # skips locally without fastai, fails under CI
    elif needed is not None and importlib.util.find_spec(needed) is None:
        pytest.skip(f"{path.name} needs {needed}, which is not installed")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    # The kernel inherits this process's environment: point it at the data, and let ipykernel pick
    # its inline plotting backend (CI exports MPLBACKEND=Agg, under which pyplot figures never reach
    # the notebook's outputs).
    monkeypatch.setenv("MINILEARN_DATA", str(mnist_root))
    monkeypatch.delenv("MPLBACKEND", raising=False)

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NBS)}})
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{path.name}: a cell raised an error\n{e}", pytrace=False)

    cells = _code_cells(nb)
    outputs = [o for c in cells for o in c.outputs]
    if path.name not in QUIET and any(CALLS_FIT.search(c.source) for c in cells):
        tables = [o for o in outputs if "<table" in str(o.get("data", {}).get("text/html", ""))]
        assert tables, f"{path.name} calls fit but showed no HTML metric table"
    if any(PLOTS.search(c.source) for c in cells):
        pngs = [o for o in outputs if "image/png" in o.get("data", {})]
        assert pngs, f"{path.name} plots but produced no image/png output"
