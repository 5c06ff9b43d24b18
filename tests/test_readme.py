"""The README's Python API example runs as written (README and code tell one story)."""

import re

import torch

from tests.conftest import REPO


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    monkeypatch.chdir(tmp_path)  # `results` there is empty: load() gives an empty table
    x = torch.randn(8, 784)
    y = torch.nn.functional.one_hot(torch.arange(8) % 10, 10).float()
    namespace = {"x": x, "y": y}
    exec(compile(block, "README.md", "exec"), namespace)
    grads, net = namespace["grads"], namespace["net"]
    assert [g.shape for g in grads] == [w.shape for w in net.weights]
