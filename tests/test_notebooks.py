"""The walkthrough notebooks in notebooks/ run top to bottom, headless.

Each notebook's source is a paired `notebooks/NAME.py` in jupytext's percent format (the
file to read and edit); `NAME.ipynb` is generated from it (`jupytext --sync notebooks/NAME.py`)
and committed without outputs. Checked without running anything: the committed notebooks
carry no outputs, their cells are exactly what jupytext makes of the .py files (so the two
cannot drift apart), every notebook in the folder is tested here, and notebooks/README.md
links each of them.

Executed: each notebook runs in memory under nbclient with the `python3` kernel, working
directory notebooks/; nothing is saved. The kernel gets FUNKCIJE_QUICK=1 (shrunken data and
epochs, a few minutes per notebook at most) unless the caller set FUNKCIJE_QUICK already, so
`FUNKCIJE_QUICK=0 python -m pytest tests/test_notebooks.py` runs the full settings (hours).
Data come from FUNKCIJE_DATA through the `data_root` fixture, so missing data fails under
CI instead of skipping. The notebooks contain their own checks (known values, gradient
checks, sanity checks on the results) as assertions, so "executes without error" means
those checks pass. A notebook must not write into the repository: files it makes (filter
snapshots, figures) go to a temporary folder.
"""
import os
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = ["ConvolutionalNetworks.ipynb", "TrainingAndEvaluation.ipynb", "FERLab2.ipynb", "DeepNetworks.ipynb"]
PAIRING = "ipynb,py:percent"

# Wall-clock budget for one whole notebook (not per cell). Quick mode takes a minute or a
# few on an idle 2-core machine; the budget only stops a hung or runaway kernel.
QUICK_BUDGET_S = 900
FULL_BUDGET_S = 4 * 3600


def _read(name):
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def _source_of(name):
    return NOTEBOOK_DIR / (Path(name).stem + ".py")


def _cells(nb):
    return [(c.cell_type, c.source, dict(c.metadata)) for c in nb.cells]


def test_every_notebook_in_the_folder_is_tested():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells, f"{name} has no code cells"
    for i, cell in enumerate(code_cells):
        assert cell.outputs == [], f"{name}: code cell {i} has stored outputs; clear them (`jupytext --sync` the .py)"
        assert cell.execution_count is None, f"{name}: code cell {i} has an execution count"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_its_py_source(name):
    source = _source_of(name)
    assert source.is_file(), f"notebooks/{name} has no paired source notebooks/{source.name}"
    from_py = jupytext.read(source)
    committed = _read(name)
    assert from_py.metadata.get("jupytext", {}).get("formats") == PAIRING, (
        f"notebooks/{source.name} must pair itself with its .ipynb (jupytext formats {PAIRING!r})")
    assert committed.metadata.get("jupytext", {}).get("formats") == PAIRING
    assert committed.metadata.get("kernelspec") == from_py.metadata.get("kernelspec")
    expected, actual = _cells(from_py), _cells(committed)
    first = next((i for i, (a, b) in enumerate(zip(expected, actual)) if a != b), min(len(expected), len(actual)))
    assert actual == expected, (
        f"notebooks/{name} differs from its source notebooks/{source.name} (first at cell {first}; "
        f"{len(actual)} vs {len(expected)} cells): edit the .py and run `jupytext --sync notebooks/{source.name}`")


def test_readme_links_every_notebook():
    readme = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    for name in NOTEBOOKS:
        assert f"]({name})" in readme, f"notebooks/README.md does not link {name}"
        assert f"]({_source_of(name).name})" in readme, f"notebooks/README.md does not link {_source_of(name).name}"


def _files_under(folder):
    return {p.relative_to(folder) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, data_root, monkeypatch):
    quick = os.environ.get("FUNKCIJE_QUICK")
    if quick is None:
        monkeypatch.setenv("FUNKCIJE_QUICK", "1")
        quick = "1"
    monkeypatch.setenv("FUNKCIJE_DATA", str(data_root))
    # the kernel imports the working tree's funkcije, as the tests do
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    budget = FULL_BUDGET_S if quick.strip() == "0" else QUICK_BUDGET_S
    deadline = time.monotonic() + budget

    def remaining(cell):
        # nbclient treats 0 or a negative timeout as "no timeout": never return one
        return max(1, int(deadline - time.monotonic()))

    before = _files_under(NOTEBOOK_DIR)
    nb = _read(name)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout_func=remaining,
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError (with the cell and traceback) on any error
    ran = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in ran), f"{name}: not every code cell ran"
    created = _files_under(NOTEBOOK_DIR) - before
    assert not created, f"{name} wrote into the repository: {sorted(map(str, created))}"
