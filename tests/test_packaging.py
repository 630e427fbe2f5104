"""What a non-editable install gets: pyproject.toml lists funkcije's packages by name, so
a new sub-package that is not listed would be missing from a wheel while the editable
install the tests run on still finds it. (Building the wheel itself takes a minute:
`python -m build`, checked by hand, README.)"""
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parent.parent
SOURCE_SUFFIXES = {".py", ".pyx", ".pxi", ".h"}


def _config():
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def _folders_with_sources():
    """Dotted names of every folder under funkcije/ that holds source files."""
    found = set()
    for path in (REPO / "funkcije").rglob("*"):
        if path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts:
            found.add(".".join(path.parent.relative_to(REPO).parts))
    return found


def test_every_source_folder_is_a_listed_package():
    listed = set(_config()["packages"])
    missing = _folders_with_sources() - listed
    assert not missing, f"pyproject.toml [tool.setuptools] packages lacks {sorted(missing)}"
    gone = {p for p in listed if not (REPO / p.replace(".", "/")).is_dir()}
    assert not gone, f"pyproject.toml lists packages that do not exist: {sorted(gone)}"


def test_non_python_sources_are_package_data():
    """The Cython and C sources a listed package holds are installed with it (the build
    and readers of an installed copy need them); Cython's generated C is not."""
    config = _config()
    data = config.get("package-data", {})
    for package in config["packages"]:
        folder = REPO / package.replace(".", "/")
        suffixes = {p.suffix for p in folder.iterdir() if p.is_file()} & (SOURCE_SUFFIXES - {".py"})
        patterns = set(data.get(package, []))
        assert {f"*{s}" for s in suffixes} <= patterns, (package, sorted(suffixes), sorted(patterns))
    assert "*.c" in config.get("exclude-package-data", {}).get("funkcije.kernels.csrc", [])


def test_the_version_lives_in_one_place():
    """pyproject.toml takes the version from funkcije.__version__; the installed metadata
    says the same."""
    from importlib.metadata import version

    import funkcije

    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert _config()["dynamic"]["version"] == {"attr": "funkcije.__version__"}
    assert version("funkcije") == funkcije.__version__
