"""The README's Python API example runs as written and computes what it says (README and
code tell one story): its gradients are PC-ALM's by SPEC §4, its M is SPEC §6's matrix."""

import re

import torch

from tests import oracle
from tests.conftest import REPO


def test_readme_python_example_runs(tmp_path, monkeypatch, one_thread):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    monkeypatch.chdir(tmp_path)  # `results` there is empty: load() gives an empty table
    x = torch.randn(8, 784, generator=torch.Generator().manual_seed(0))
    y = torch.nn.functional.one_hot(torch.arange(8) % 10, 10).float()
    namespace = {"x": x, "y": y}
    exec(compile(block, "README.md", "exec"), namespace)
    grads, net, algo = namespace["grads"], namespace["net"], namespace["algo"]
    assert [g.shape for g in grads] == [w.shape for w in net.weights]

    # The gradients are PC-ALM's (SPEC §4) with the options the README names, recomputed
    # by autograd of the energy in float64 (the README's net is float32).
    assert algo.options() == {"budget": 32, "state_lr": 0.22, "rho": 1.0, "alpha": 1.0,
                              "inner_steps": 1, "weight_credit": "pre_dual"}
    weights = [w.detach().double() for w in net.weights]
    want, _ = oracle.inference_grads(weights, x.double(), y.double(), "relu",
                                     oracle.scales(784, 32, 16), algo="pcalm", budget=32,
                                     state_lr=0.22)
    for got, expected in zip(grads, want):
        torch.testing.assert_close(got.double(), expected, rtol=2e-4, atol=1e-6)

    # M of the linear net: SPEC §6's block matrix, built here from H = PᵀP + ρRᵀR.
    linear = namespace["linear"]
    a = (linear.a_in, linear.a_hidden, linear.a_out)
    w = [t.detach() for t in linear.weights]
    n, layers, eta = 16, 15, 0.2
    R = torch.eye(n * layers, dtype=torch.float64)
    for l in range(1, layers):
        R[l * n:(l + 1) * n, (l - 1) * n:l * n] = -(torch.eye(n, dtype=torch.float64)
                                                     + a[1] * w[l])
    H = oracle.gauss_newton_hessians(w, torch.zeros(1, 784, dtype=torch.float64), "identity",
                                     a)[0]
    eye = torch.eye(n * layers, dtype=torch.float64)
    M = torch.cat([torch.cat([eye - eta * H, -eta * R.T], 1),
                   torch.cat([R @ (eye - eta * H), eye - eta * R @ R.T], 1)])
    torch.testing.assert_close(namespace["M"], M, rtol=1e-12, atol=1e-12)


def test_every_test_docs_testing_names_exists():
    """docs/TESTING.md points at tests by name (`file.py::test_x`, then `::test_y` in the same
    file): each must be a test function of that file, so the map cannot go stale."""
    text = (REPO / "docs" / "TESTING.md").read_text(encoding="utf-8")
    named = 0
    for line in text.splitlines():
        current = None
        for path, name in re.findall(r"`(?:(test_\w+\.py))?(?:::(test_\w+))?`", line):
            current = path or current
            if not current:
                continue
            source = (REPO / "tests" / current).read_text(encoding="utf-8")
            if name:
                assert re.search(rf"^def {name}\(", source, flags=re.M), f"{current}::{name}"
                named += 1
    assert named >= 30
