"""The training loop shared by SFT, the reward model and DPO, with everything that makes a run
safe to kill: periodic atomic checkpoints, exact resumption, SIGINT/SIGTERM handling, and
guards against non-finite losses and gradients.

A trainer hands in ``epoch_batches(epoch) -> list of index lists`` (this process's batches)
and ``compute_loss(indices) -> (loss, stats)``; the loop gathers each optimizer step's
micro-batches, steps (``optim.accumulate_and_step``), logs and checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from rlhf.trainers.optim import NonFiniteGuard, accumulate_and_step
from rlhf.trainers.resume import resolve_resume
from rlhf.trainers.signals import StopSignals, TrainingInterrupted


@dataclass
class LoopState:
    """Where a supervised run stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    window: list[dict[str, float]] = field(default_factory=list)  # per-batch stats since the last log
    nonfinite_skipped: int = 0


def train_loop(config, accelerator, model, optimizer, scheduler, epoch_batches: Callable[[int], list[list[int]]],
               compute_loss: Callable[[list[int]], tuple[torch.Tensor, dict[str, torch.Tensor]]], total_steps: int,
               logger, checkpointer, state: LoopState, loss_name: str,
               after_step: Callable[[int], dict[str, float] | None] | None = None) -> LoopState:
    """Run optimizer steps until ``total_steps``, from ``state`` (fresh or resumed)."""
    guard = NonFiniteGuard(config.max_nonfinite_skips, state.nonfinite_skipped)
    next_batch = _batch_reader(state, epoch_batches)
    model.train()
    with StopSignals() as stop:
        while state.step < total_steps:
            # 1. This step's micro-batches (an accumulation window may run into the next epoch).
            window = [next_batch() for _ in range(config.gradient_accumulation_steps)]
            # 2. Forward and backward each, clip, step (a non-finite loss or gradient skips or stops).
            result = accumulate_and_step(model, optimizer, scheduler, accelerator, guard, state.step + 1, window,
                                         compute_loss, config.max_grad_norm, f"loss/{loss_name}")
            state.window += [{f"loss/{loss_name}": loss.item(), **{k: float(v) for k, v in stats.items()},
                              EXAMPLES: float(len(batch))} for (loss, stats), batch in zip(result.outputs, window)]
            state.step += 1
            state.nonfinite_skipped = guard.skipped
            logger.advance()
            # 3. Log (averaged over the window and the processes), evaluate, checkpoint.
            if state.step % config.logging_steps == 0 or state.step == total_steps:
                metrics = mean_over_examples(state.window, accelerator)
                metrics.update({"train/learning_rate": scheduler.get_last_lr()[0], "train/epoch": state.epoch,
                                "train/grad_norm": result.grad_norm})
                logger.log(state.step, metrics)
                state.window = []
            if after_step is not None and state.step < total_steps:
                extra = after_step(state.step)
                if extra:
                    logger.log(state.step, extra)
            signum = stop.requested(accelerator)
            if signum or (config.save_steps and state.step % config.save_steps == 0 and state.step < total_steps):
                path = checkpointer.save(state.step, loop_state_dict(state, logger))
                if signum:
                    raise TrainingInterrupted(signum, state.step, path)
    return state


EXAMPLES = "_examples"  # the key under which a window entry records its batch's size


def mean_over_examples(entries: list[dict[str, float]], accelerator, keys: list[str] | None = None
                       ) -> dict[str, float]:
    """Per-example means of per-batch means, over every process: each entry holds its batch's
    means and, under ``EXAMPLES``, how many examples it averaged (1 if absent), so a short last
    batch weighs what its examples weigh, not what a full batch does."""
    keys = keys or [k for k in entries[0] if k != EXAMPLES]  # a process may have no entries; others do
    counts = torch.tensor([e.get(EXAMPLES, 1.0) for e in entries], dtype=torch.float64)  # (N,)
    values = torch.tensor([[e[k] for k in keys] for e in entries], dtype=torch.float64).reshape(-1, len(keys))
    sums = torch.cat([(values * counts[:, None]).sum(0), counts.sum().reshape(1)])  # (K + 1,)
    if accelerator.num_processes > 1:
        sums = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
    return {k: (sums[i] / sums[-1]).item() for i, k in enumerate(keys)}


def _batch_reader(state: LoopState, epoch_batches: Callable[[int], list[list[int]]]) -> Callable[[], list[int]]:
    """The next batch from ``state``'s position, moving to the next epoch when one is used up."""
    cache: dict[int, list[list[int]]] = {}

    def next_batch() -> list[int]:
        if state.epoch not in cache:
            cache.clear()
            cache[state.epoch] = epoch_batches(state.epoch)
        if state.batch_in_epoch >= len(cache[state.epoch]):
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            return next_batch()
        state.batch_in_epoch += 1
        return cache[state.epoch][state.batch_in_epoch - 1]

    return next_batch


def loop_state_dict(state: LoopState, logger) -> dict[str, Any]:
    return {"loop": {"epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch, "window": state.window,
                     "nonfinite_skipped": state.nonfinite_skipped},
            "metrics_lines": logger.lines_written}


def loop_state_from(saved: dict[str, Any] | None) -> LoopState:
    if saved is None:
        return LoopState()
    return LoopState(step=saved["step"], **saved["loop"])


@dataclass
class SupervisedRun:
    """What SFT, the reward model and DPO set up alike: this process's batches of each epoch,
    the optimizer and schedule, checkpoints (resumed from if asked) and the logs."""

    config: Any
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    checkpointer: Any
    logger: Any
    saved: dict[str, Any] | None
    epoch_batches: Callable[[int], list[list[int]]]
    total_steps: int

    @classmethod
    def start(cls, config, accelerator, model, lengths: list[int], stage: str,
              postfix_keys: tuple[str, ...]) -> "SupervisedRun":
        from rlhf.config.base import ConfigError
        from rlhf.data import length_grouped_batches  # looked up at call time (tests replace it)
        from rlhf.models.loading import enable_gradient_checkpointing
        from rlhf.trainers.checkpoint import Checkpointer
        from rlhf.trainers.datasets import batches_for_this_process
        from rlhf.trainers.optim import make_optimizer, make_scheduler, num_update_steps
        from rlhf.trainers.run_logger import RunLogger
        from rlhf.trainers.setup import prepare_output_dir
        from rlhf.trainers.sharding import prepare_trainable

        size = config.per_device_train_batch_size

        def epoch_batches(epoch: int) -> list[list[int]]:
            if config.group_by_length:
                batches = length_grouped_batches(lengths, size, seed=config.seed + epoch)
            else:
                order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(config.seed + epoch)).tolist()
                batches = [order[i:i + size] for i in range(0, len(order), size)]
            return batches_for_this_process(batches, accelerator)

        batches_per_epoch = len(epoch_batches(0))
        if batches_per_epoch == 0:
            raise ConfigError(f"{config.train_file}: {len(lengths)} examples do not fill one batch of {size} per process: "
                              "lower --per_device_train_batch_size or add examples")
        total_steps = num_update_steps(config, batches_per_epoch)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        optimizer = make_optimizer(model.parameters(), config)
        scheduler = make_scheduler(optimizer, config, total_steps)
        model, optimizer = prepare_trainable(accelerator, model, optimizer)  # DDP, FSDP2 or ZeRO
        output_dir = prepare_output_dir(config, accelerator)  # model and data loaded fine: now the folder is written
        checkpointer = Checkpointer(output_dir, accelerator, {"model": model}, optimizer, scheduler,
                                    config.save_total_limit)
        resume_from = resolve_resume(config, output_dir)
        saved = checkpointer.load(resume_from) if resume_from else None
        logger = RunLogger(output_dir, accelerator, total_steps, config.report_to, config.disable_tqdm, stage,
                           postfix_keys=postfix_keys, resume=saved)
        return cls(config, accelerator, model, optimizer, scheduler, checkpointer, logger, saved, epoch_batches,
                   total_steps)

    def train(self, compute_loss, loss_name: str, after_step=None) -> LoopState:
        state = train_loop(self.config, self.accelerator, self.model, self.optimizer, self.scheduler,
                           self.epoch_batches, compute_loss, self.total_steps, self.logger, self.checkpointer,
                           loop_state_from(self.saved), loss_name, after_step=after_step)
        self.logger.end_progress()
        return state
