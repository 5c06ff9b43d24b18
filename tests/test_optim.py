"""pcalm.core.optim: Adam over a model stack with one learning rate per model."""

import pytest
import torch

from pcalm.core.optim import StackedAdam, make_adam


def _stack_and_singles(lrs, shape=(4, 5)):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(len(lrs), *shape, dtype=torch.float64))
    singles = [torch.nn.Parameter(p.detach()[m].clone()) for m in range(len(lrs))]
    return p, singles


def test_stacked_adam_equals_torch_adam_per_model():
    lrs = [1e-3, 3e-2, 0.1]
    p, singles = _stack_and_singles(lrs)
    opt = make_adam([p], lrs)
    assert isinstance(opt, StackedAdam)
    alone = [torch.optim.Adam([s], lr=lr) for s, lr in zip(singles, lrs)]
    for _ in range(25):
        g = torch.randn_like(p) * torch.tensor([1.0, 1e-3, 1e3], dtype=p.dtype).view(-1, 1, 1)
        p.grad = g
        opt.step()
        for m, (s, o) in enumerate(zip(singles, alone)):
            s.grad = g[m].clone()
            o.step()
    for m, s in enumerate(singles):
        torch.testing.assert_close(p[m], s, rtol=1e-13, atol=1e-15)


def test_stacked_adam_resumes_from_its_state_dict():
    lrs = [1e-2, 5e-2]
    p, _ = _stack_and_singles(lrs)
    q = torch.nn.Parameter(p.detach().clone())
    grads = [torch.randn_like(p) for _ in range(6)]
    straight = StackedAdam([p], lrs)
    for g in grads:
        p.grad = g
        straight.step()
    first = StackedAdam([q], lrs)
    for g in grads[:3]:
        q.grad = g
        first.step()
    resumed = StackedAdam([q], lrs)
    resumed.load_state_dict(first.state_dict())
    for g in grads[3:]:
        q.grad = g
        resumed.step()
    assert torch.equal(p, q)


def test_one_learning_rate_is_torch_adam_and_a_wrong_count_is_an_error():
    p, _ = _stack_and_singles([1e-3, 1e-3])
    assert type(make_adam([p], [1e-3, 1e-3])) is torch.optim.Adam
    with pytest.raises(ValueError, match="3 learning rates for a stack of 2 models"):
        StackedAdam([p], [1e-3, 2e-3, 3e-3])
