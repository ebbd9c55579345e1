"""accumulate_and_step: the one accumulate / clip / non-finite check / step block of every trainer."""

import math

import pytest
import torch

from rlhf.trainers.optim import NonFiniteError, NonFiniteGuard, accumulate_and_step


def accelerator_with(accumulation_steps: int):
    from accelerate import Accelerator

    return Accelerator(cpu=True, gradient_accumulation_steps=accumulation_steps)


def setup(lr: float = 0.1):
    """A linear model y = w.x with w = 0, a plain SGD step (update = -lr * grad) and a constant schedule."""
    model = torch.nn.Linear(3, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return model, optimizer, scheduler


X = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0], [2.0, 1.0, 0.0], [1.0, 1.0, 1.0],
                  [0.0, 2.0, 1.0], [1.0, 0.0, 0.0], [3.0, 1.0, 1.0], [0.0, 0.0, 1.0]])  # (8, 3)
Y = torch.arange(1.0, 9.0)  # (8,)


def mse(model, rows):
    return ((model(X[rows]).squeeze(-1) - Y[rows]) ** 2).mean(), {"rows": float(len(rows))}


def test_four_accumulated_micro_batches_step_like_one_batch_and_clip_the_global_norm():
    # w = 0: the gradient of mean((w.x - y)^2) over all 8 rows is -2/8 * sum_i y_i x_i
    full_grad = -2 / 8 * (Y[:, None] * X).sum(0)  # (3,): sum_i y_i x_i = [38, 26, 28]
    torch.testing.assert_close(full_grad, torch.tensor([-9.5, -6.5, -7.0]))
    norm = full_grad.norm().item()
    for max_grad_norm, scale in ((0.0, 1.0), (1.0, 1.0 / norm)):  # 0: no clipping; 1: clipped to norm 1
        model, optimizer, scheduler = setup()
        result = accumulate_and_step(model, optimizer, scheduler, accelerator_with(4), NonFiniteGuard(), 1,
                                     [[0, 1], [2, 3], [4, 5], [6, 7]], lambda rows: mse(model, rows), max_grad_norm)
        assert result.stepped and result.grad_norm == pytest.approx(norm, rel=1e-6)  # the norm before clipping
        assert [stats["rows"] for _, stats in result.outputs] == [2.0] * 4
        torch.testing.assert_close(model.weight.detach()[0], -0.1 * scale * full_grad)
        assert model.weight.grad is None  # zeroed for the next window
    # the same step from one batch of 8 without accumulation
    model, optimizer, scheduler = setup()
    accumulate_and_step(model, optimizer, scheduler, accelerator_with(1), NonFiniteGuard(), 1, [list(range(8))],
                        lambda rows: mse(model, rows), 0.0)
    torch.testing.assert_close(model.weight.detach()[0], -0.1 * full_grad)


def test_a_non_finite_loss_in_a_middle_micro_batch_skips_the_step_and_its_backward():
    model, optimizer, scheduler = setup()
    backward_calls = []

    def compute_loss(rows):
        loss, stats = mse(model, rows)
        if rows == [2, 3]:
            loss = loss * float("nan")
        loss.register_hook(lambda grad: backward_calls.append(rows))
        return loss, stats

    guard = NonFiniteGuard(max_skips=1)
    result = accumulate_and_step(model, optimizer, scheduler, accelerator_with(4), guard, 7,
                                 [[0, 1], [2, 3], [4, 5], [6, 7]], compute_loss, 1.0)
    assert not result.stepped and guard.skipped == 1 and math.isnan(result.grad_norm)
    assert backward_calls == [[0, 1]]  # nothing back-propagated from the NaN micro-batch on
    assert math.isnan(result.outputs[1][0].item()) and len(result.outputs) == 4
    assert torch.equal(model.weight.detach(), torch.zeros(1, 3)) and model.weight.grad is None
    assert scheduler.last_epoch == 0  # the schedule did not advance either
    # the next window is clean and steps; the one after that has a NaN and no skips are left
    result = accumulate_and_step(model, optimizer, scheduler, accelerator_with(4), guard, 8,
                                 [[0, 1], [4, 5], [6, 7], [0, 1]], compute_loss, 1.0)
    assert result.stepped and model.weight.abs().sum() > 0 and scheduler.last_epoch == 1
    with pytest.raises(NonFiniteError, match=r"step 9: non-finite loss/sft = nan.*skipped so far: 1"):
        accumulate_and_step(model, optimizer, scheduler, accelerator_with(4), guard, 9,
                            [[0, 1], [4, 5], [6, 7], [2, 3]], compute_loss, 1.0, loss_name="loss/sft")


def test_a_non_finite_gradient_with_a_finite_loss_is_caught_too():
    model, optimizer, scheduler = setup()

    def compute_loss(rows):
        loss, stats = mse(model, rows)
        loss.register_hook(lambda grad: grad * float("inf"))  # a finite loss whose gradient overflows
        return loss, stats

    with pytest.raises(NonFiniteError, match="step 1: non-finite gradient norm"):
        accumulate_and_step(model, optimizer, scheduler, accelerator_with(1), NonFiniteGuard(), 1, [[0, 1]],
                            compute_loss, 1.0)
    assert torch.equal(model.weight.detach(), torch.zeros(1, 3))


def test_the_window_must_match_the_accumulation_steps():
    model, optimizer, scheduler = setup()
    with pytest.raises(ValueError, match="3 micro-batches for one optimizer step, but the accelerator accumulates 4"):
        accumulate_and_step(model, optimizer, scheduler, accelerator_with(4), NonFiniteGuard(), 1,
                            [[0], [1], [2]], lambda rows: mse(model, rows), 1.0)
