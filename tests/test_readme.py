"""The README's Python examples run as printed, in order, in one namespace (as a reader
pasting them into an interpreter would), on a small stand-in for CIFAR-10 so that the
training examples take seconds: names, arguments and the values their comments claim."""
import ast
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _small_cifar(**kwargs):
    """get_CIFAR10_data's dict, shapes and dtypes, with 96 / 32 / 32 random images."""
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", 96), ("val", 32), ("test", 32)):
        out[f"X_{split}"] = rng.standard_normal((n, 3, 32, 32)).astype(np.float32) * 60
        out[f"y_{split}"] = rng.integers(0, 10, n)
    return out


def test_the_readme_examples_run(tmp_path, monkeypatch, capsys):
    from funkcije import data_utils

    blocks = _python_blocks()
    assert len(blocks) >= 5, "the README's examples moved: update this test"
    monkeypatch.chdir(tmp_path)  # the callbacks example writes under runs/
    monkeypatch.setattr(data_utils, "get_CIFAR10_data", _small_cifar)
    scope, checked = {}, 0
    for block in blocks:
        exec(compile(block, str(README), "exec"), scope)
        claimed = re.search(r"^list\(model\.params\)\s*#\s*(\[.*\])$", block, flags=re.M)
        if claimed:  # the composed model's parameter names, as its comment lists them
            assert list(scope["model"].params) == ast.literal_eval(claimed.group(1))
            checked += 1
    assert checked == 1
    printed = capsys.readouterr().out
    assert float(printed.split()[0]) < 1e-7  # rel_error(dx, dx_num), "~4e-8"
    assert "parameters: 821,706" in printed  # summary(FERMnistNet()): "821 706 parameters"
    assert scope["solver"].best_epoch >= 0 and scope["solver"].history[-1]["eval"]["val"]["recall"] is not None
    assert (tmp_path / "runs" / "fer" / "weights.png").is_file()
    assert any((tmp_path / "runs" / "fer" / "filters").iterdir())
