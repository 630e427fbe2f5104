"""The walkthrough notebooks in notebooks/ run top to bottom, headless.

Each notebook is executed in memory by nbclient with the `python3` kernel, working
directory notebooks/; nothing is saved. The kernel gets FUNKCIJE_QUICK=1 (shrunken
data and epochs, a minute or two per notebook) unless the caller set FUNKCIJE_QUICK
already, so `FUNKCIJE_QUICK=0 python -m pytest tests/test_notebooks.py` runs the full
settings (half an hour or more). Data come from FUNKCIJE_DATA through the `data_root`
fixture, so missing data fails under CI instead of skipping.

The notebooks contain their own checks (known values, gradient checks, sanity checks
on the results) as assertions, so "executes without error" means those checks pass.

Also checked without running anything: the committed notebooks carry no outputs, they
are exactly what notebooks/_build_notebooks.py builds, and notebooks/README.md links
each of them.
"""
import importlib.util
import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = ["ConvolutionalNetworks.ipynb", "TrainingAndEvaluation.ipynb"]

# Wall-clock budget for one whole notebook (not per cell). Quick mode takes well under a
# minute on an idle 2-core machine; the budget only stops a hung or runaway kernel.
QUICK_BUDGET_S = 600
FULL_BUDGET_S = 3 * 3600


def _load_builder():
    spec = importlib.util.spec_from_file_location("_build_notebooks", NOTEBOOK_DIR / "_build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(name):
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def test_the_builder_lists_exactly_the_tested_notebooks():
    assert sorted(_load_builder().NOTEBOOKS) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells, f"{name} has no code cells"
    for i, cell in enumerate(code_cells):
        assert cell.outputs == [], f"{name}: code cell {i} has stored outputs; clear them (rebuild the notebook)"
        assert cell.execution_count is None, f"{name}: code cell {i} has an execution count"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_what_the_builder_builds(name):
    builder = _load_builder()
    expected = builder.render(builder.build()[name])
    actual = (NOTEBOOK_DIR / name).read_text(encoding="utf-8")
    assert actual == expected, (
        f"notebooks/{name} differs from notebooks/_build_notebooks.py's output; edit the builder "
        "and run `python notebooks/_build_notebooks.py`"
    )


def test_readme_links_every_notebook():
    readme = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8")
    for name in NOTEBOOKS:
        assert f"]({name})" in readme, f"notebooks/README.md does not link {name}"


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
