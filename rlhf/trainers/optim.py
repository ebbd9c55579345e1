"""The optimizer: AdamW and its learning-rate schedule, and how one optimizer step is taken from
a window of accumulated micro-batches, guarded against non-finite losses and gradients.

``accumulate_and_step`` is the one place where SFT, the reward model, DPO and PPO back-propagate,
clip and step, so they all treat a NaN the same way.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from rlhf.errors import UserError


def make_optimizer(params: Iterable[torch.nn.Parameter], config) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        [p for p in params if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay,
        betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon,
        fused=config.optim == "adamw_torch_fused",
    )


def make_scheduler(optimizer: torch.optim.Optimizer, config, num_training_steps: int):
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear/cosine decay to 0 (or constant)."""
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(config.lr_scheduler_type, config.lr_scheduler_type)
    return get_scheduler(name, optimizer, num_warmup_steps=math.ceil(config.warmup_ratio * num_training_steps),
                         num_training_steps=num_training_steps)


def num_update_steps(config, batches_per_epoch: int) -> int:
    """Optimizer steps of the run: max_steps if set, else epochs x (batches / accumulation)."""
    if config.max_steps > 0:
        return config.max_steps
    steps_per_epoch = max(1, batches_per_epoch // config.gradient_accumulation_steps)
    return max(1, math.ceil(config.num_train_epochs * steps_per_epoch))


class NonFiniteError(UserError, RuntimeError):
    """A loss or gradient norm became NaN or infinite."""


@dataclass
class NonFiniteGuard:
    """Stop (default) or skip up to ``max_skips`` optimizer steps whose loss or gradient norm is not finite."""

    max_skips: int = 0
    skipped: int = 0

    def check(self, step: int, values: dict[str, float]) -> bool:
        """True if the step may proceed; False to skip it; raises when skips run out."""
        bad = {name: value for name, value in values.items() if not math.isfinite(value)}
        if not bad:
            return True
        what = ", ".join(f"{name} = {value}" for name, value in bad.items())
        if self.skipped >= self.max_skips:
            raise NonFiniteError(f"step {step}: non-finite {what}. Lower the learning rate, check the data, or pass "
                                 f"--max_nonfinite_skips N to skip such steps (skipped so far: {self.skipped})")
        self.skipped += 1
        print(f"warning: step {step}: non-finite {what}; step skipped ({self.skipped}/{self.max_skips})", flush=True)
        return False


@dataclass
class StepResult:
    """What one accumulated optimizer step did."""

    outputs: list[tuple[torch.Tensor, dict[str, Any]]]  # (detached loss, stats) of each micro-batch
    grad_norm: float  # the gradient norm before clipping; NaN when no gradient was formed
    stepped: bool  # False: the window held a non-finite value and the step was skipped


def accumulate_and_step(model, optimizer, scheduler, accelerator, guard: NonFiniteGuard, step: int,
                        micro_batches: Sequence, compute_loss: Callable[[Any], tuple[torch.Tensor, dict[str, Any]]],
                        max_grad_norm: float, loss_name: str = "loss") -> StepResult:
    """One optimizer step from ``gradient_accumulation_steps`` micro-batches.

    1. Each micro-batch: forward (``compute_loss``), then backward of loss / accumulation steps
       (accelerator.backward scales it), gradients synchronised across processes only at the last.
       A non-finite loss in any micro-batch (on any process) marks the window bad: from then on
       nothing is back-propagated, so a NaN never reaches the gradients.
    2. Clip the global gradient norm to ``max_grad_norm`` (0: no clipping).
    3. Step the optimizer and schedule, unless the loss or the gradient norm is not finite: then the
       guard counts a skipped step (or raises NonFiniteError when skips run out).
    """
    if len(micro_batches) != accelerator.gradient_accumulation_steps:
        raise ValueError(f"{len(micro_batches)} micro-batches for one optimizer step, but the accelerator "
                         f"accumulates {accelerator.gradient_accumulation_steps}")
    bad_loss: float | None = None
    outputs = []
    for i, micro_batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        # DDP all-reduces gradients in the backward of the last micro-batch only
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            loss, stats = compute_loss(micro_batch)
            loss_value = _global_max_abs(loss.detach(), accelerator)
            if bad_loss is None and not math.isfinite(loss_value):
                bad_loss = loss_value
            if bad_loss is None:
                accelerator.backward(loss)
        outputs.append((loss.detach(), {k: v.detach() if torch.is_tensor(v) else v for k, v in stats.items()}))
    grad_norm = math.nan
    if bad_loss is None:
        # clip_grad_norm_ returns the norm of the all-reduced gradients: the same on every process
        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or math.inf))
    stepped = guard.check(step, {loss_name: bad_loss} if bad_loss is not None else {"gradient norm": grad_norm})
    if stepped:
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(outputs, grad_norm, stepped)


def _global_max_abs(value: torch.Tensor, accelerator) -> float:
    """|loss| maxed over processes (NaN stays NaN), so every process takes the same decision."""
    value = value.float().abs().reshape(1)
    if accelerator.num_processes > 1:
        value = accelerator.reduce(torch.where(torch.isfinite(value), value, torch.full_like(value, math.inf)), "max")
    return value.item()


def shuffled_minibatch_epochs(model, optimizer, scheduler, accelerator, guard: NonFiniteGuard, step: int,
                              num_rows: int, epochs: int, micro: int, accumulation_steps: int,
                              compute_loss: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, Any]]],
                              max_grad_norm: float, device=None) -> dict[str, torch.Tensor]:
    """``epochs`` passes over a rollout's ``num_rows`` rows in a fresh random order each time; each
    minibatch of ``micro * accumulation_steps`` rows is one optimizer step (accumulate_and_step).
    Returns every statistic ``compute_loss`` reported, averaged over all micro-batches."""
    minibatch = micro * accumulation_steps
    stats: dict[str, list[torch.Tensor]] = {}
    for _ in range(epochs):
        order = torch.randperm(num_rows, device=device)
        for start in range(0, num_rows, minibatch):
            micro_batches = [order[i:i + micro] for i in range(start, start + minibatch, micro)]
            result = accumulate_and_step(model, optimizer, scheduler, accelerator, guard, step, micro_batches,
                                         compute_loss, max_grad_norm)
            for _, micro_stats in result.outputs:
                for name, value in micro_stats.items():
                    stats.setdefault(name, []).append(value)
    return {name: torch.stack(values).mean() for name, values in stats.items()}
