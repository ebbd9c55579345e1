"""The supervised training loop shared by SFT, the reward model and DPO, with everything that
makes a run safe to kill: periodic atomic checkpoints, exact resumption, SIGINT/SIGTERM
handling, and guards against non-finite losses and gradients.

A trainer hands in ``epoch_batches(epoch) -> list of index lists`` (this process's batches)
and ``compute_loss(indices) -> (loss, stats)``; the loop does accumulation, clipping,
stepping, logging and checkpointing. PPO has its own loop (rollouts, not batches) but uses
the same pieces.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from rlhf.trainers.checkpoint import find_resumable, validate_checkpoint


class NonFiniteError(RuntimeError):
    """A loss or gradient norm became NaN or infinite."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved and the run stopped cleanly."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; saved {checkpoint}. "
                         "Continue with the same command plus --resume.")


class StopSignals:
    """Turn SIGINT/SIGTERM into a flag that the loop reads at the next step boundary, so the
    step in flight finishes and is saved instead of being lost."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def requested(self, accelerator) -> int | None:
        """The signal any process received (all processes must stop at the same step)."""
        flag = torch.tensor([float(self.signum or 0)], device=accelerator.device)
        if accelerator.num_processes > 1:
            flag = accelerator.reduce(flag, "max")
        return int(flag.item()) or None


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


def resolve_resume(config, output_dir: Path) -> Path | None:
    """``--resume``: '' starts fresh; 'latest' takes the newest intact checkpoint in output_dir;
    a path takes that checkpoint (which must be intact)."""
    if not config.resume:
        return None
    if config.resume == "latest":
        found = find_resumable(output_dir)
        if found is None:
            print(f"--resume: no intact checkpoint in {output_dir}/checkpoints; starting from the beginning", flush=True)
        else:
            print(f"resuming from {found}", flush=True)
        return found
    path = Path(config.resume)
    problem = validate_checkpoint(path) if path.is_dir() else "not a folder"
    if problem:
        raise ValueError(f"--resume {path}: {problem}")
    return path


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
    bad_loss: float | None = None  # a non-finite loss seen in the current accumulation window
    model.train()
    with StopSignals() as stop:
        while state.step < total_steps:
            batches = epoch_batches(state.epoch)
            while state.batch_in_epoch < len(batches) and state.step < total_steps:
                with accelerator.accumulate(model):
                    loss, stats = compute_loss(batches[state.batch_in_epoch])
                    loss_value = _global_max_abs(loss.detach(), accelerator)
                    if math.isfinite(loss_value):
                        accelerator.backward(loss)
                    elif bad_loss is None:
                        bad_loss = loss_value
                    grad_norm = None
                    if accelerator.sync_gradients:
                        # clip_grad_norm_ returns the norm of the all-reduced gradients: the same on every process
                        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm or math.inf))
                        values = {"gradient norm": grad_norm} if bad_loss is None else {f"loss/{loss_name}": bad_loss}
                        if guard.check(state.step + 1, values):
                            optimizer.step()
                            scheduler.step()
                        bad_loss = None
                    optimizer.zero_grad(set_to_none=True)
                state.batch_in_epoch += 1
                state.window.append({f"loss/{loss_name}": loss.item(), **{k: float(v) for k, v in stats.items()}})
                if not accelerator.sync_gradients:
                    continue
                state.step += 1
                state.nonfinite_skipped = guard.skipped
                logger.advance()
                if state.step % config.logging_steps == 0 or state.step == total_steps:
                    metrics = {k: accelerator.reduce(torch.tensor(sum(w[k] for w in state.window) / len(state.window),
                                                                  device=accelerator.device), "mean").item()
                               for k in state.window[0]}
                    metrics.update({"train/learning_rate": scheduler.get_last_lr()[0], "train/epoch": state.epoch,
                                    "train/grad_norm": grad_norm})
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
            if state.batch_in_epoch >= len(batches):
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    return state


def loop_state_dict(state: LoopState, logger) -> dict[str, Any]:
    return {"loop": {"epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch, "window": state.window,
                     "nonfinite_skipped": state.nonfinite_skipped},
            "metrics_lines": logger.lines_written}


def loop_state_from(saved: dict[str, Any] | None) -> LoopState:
    if saved is None:
        return LoopState()
    return LoopState(step=saved["step"], **saved["loop"])


def _global_max_abs(value: torch.Tensor, accelerator) -> float:
    """|loss| maxed over processes (NaN stays NaN), so every process takes the same decision."""
    value = value.float().abs().reshape(1)
    if accelerator.num_processes > 1:
        value = accelerator.reduce(torch.where(torch.isfinite(value), value, torch.full_like(value, math.inf)), "max")
    return value.item()


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
        from rlhf.data import length_grouped_batches
        from rlhf.trainers.checkpoint import Checkpointer
        from rlhf.trainers.common import (
            RunLogger, batches_for_this_process, make_optimizer, make_scheduler, num_update_steps,
        )

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
            raise ValueError(f"{config.train_file}: {len(lengths)} examples do not fill one batch of {size} per process")
        total_steps = num_update_steps(config, batches_per_epoch)
        optimizer = make_optimizer(model.parameters(), config)
        scheduler = make_scheduler(optimizer, config, total_steps)
        model, optimizer = accelerator.prepare(model, optimizer)
        output_dir = Path(config.output_dir)
        checkpointer = Checkpointer(output_dir, accelerator, {"model": model}, optimizer, scheduler,
                                    config.save_total_limit)
        resume_from = resolve_resume(config, output_dir)
        saved = checkpointer.load(resume_from) if resume_from else None
        logger = RunLogger(output_dir, accelerator, total_steps, config.report_to, config.disable_tqdm, stage,
                           postfix_keys=postfix_keys, resume=saved)
        return cls(config, accelerator, model, optimizer, scheduler, checkpointer, logger, saved, epoch_batches,
                   total_steps)

    def train(self, compute_loss, loss_name: str, after_step=None) -> LoopState:
        return train_loop(self.config, self.accelerator, self.model, self.optimizer, self.scheduler,
                          self.epoch_batches, compute_loss, self.total_steps, self.logger, self.checkpointer,
                          loop_state_from(self.saved), loss_name, after_step=after_step)
