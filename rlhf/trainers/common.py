"""Plumbing every trainer shares: the Accelerator, the optimizer and schedule, metrics
output (JSONL, TensorBoard, progress bar) and atomic model saves.

Kept out of the trainers so that each trainer reads like its algorithm.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

import torch

from rlhf.config.base import ConfigError, save_config
from rlhf.models.loading import TRAINING_INFO_FILE


def make_accelerator(config):
    """An Accelerator for this run. On a machine without a GPU we pass ``cpu=True`` so that
    ``torchrun --nproc_per_node N`` gives N CPU processes over gloo (without it accelerate
    ignores torchrun's environment on the CPU)."""
    from accelerate import Accelerator

    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision="bf16" if config.bf16 else "no",
        gradient_accumulation_steps=getattr(config, "gradient_accumulation_steps", 1),
    )


def prepare_output_dir(config, accelerator) -> Path:
    """Create the output directory and prove it is writable now, not after an hour of training;
    then save the resolved config there."""
    output_dir = Path(config.output_dir)
    if accelerator.is_main_process:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            probe = output_dir / f".write-test-{uuid.uuid4().hex}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise ConfigError(f"cannot write to output_dir {str(output_dir)!r}: {err}") from err
        save_config(config, output_dir)
    accelerator.wait_for_everyone()
    return output_dir


def seed_everything(seed: int) -> None:
    from accelerate.utils import set_seed

    set_seed(seed)


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


class RunLogger:
    """Metrics of the main process: one JSON line per logged step in ``metrics.jsonl``,
    TensorBoard scalars, and a tqdm progress bar showing the key numbers."""

    def __init__(self, output_dir: Path, accelerator, total_steps: int, report_to: str = "tensorboard",
                 disable_tqdm: bool = False, description: str = "train", postfix_keys: tuple[str, ...] = (),
                 resume: dict[str, Any] | None = None):
        """``resume``: a checkpoint's trainer state; metric lines written after it are dropped
        (the resumed run writes them again) and TensorBoard purges the steps after it."""
        self.enabled = accelerator.is_main_process
        self.postfix_keys = postfix_keys
        self.start_time = time.time()
        self.history: list[dict[str, Any]] = []
        self._jsonl = self._tb = self._bar = None
        if not self.enabled:
            return
        path = Path(output_dir) / "metrics.jsonl"
        if resume is not None:
            self.history = _truncate_jsonl(path, resume["metrics_lines"])
        elif path.exists():
            path.unlink()  # a fresh run in a used folder: its metrics start over
        self._jsonl = open(path, "a", encoding="utf-8")
        start_step = resume["step"] if resume else 0
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"),
                                     purge_step=start_step + 1 if resume else None)
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total_steps, initial=start_step, desc=description, disable=disable_tqdm,
                         dynamic_ncols=True)

    @property
    def lines_written(self) -> int:
        return len(self.history)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _to_float(v) for k, v in metrics.items()},
                  "time/elapsed_s": round(time.time() - self.start_time, 3)}
        self.history.append(record)
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, float) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
        shown = {k.split("/")[-1]: f"{record[k]:.4g}" for k in self.postfix_keys if k in record}
        if shown:
            self._bar.set_postfix(shown, refresh=False)

    def elapsed(self) -> float:
        return round(time.time() - self.start_time, 1)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def write_text(self, tag: str, text: str, step: int) -> None:
        if self._tb is not None:
            self._tb.add_text(tag, text, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._bar.close()
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _truncate_jsonl(path: Path, keep: int) -> list[dict[str, Any]]:
    """Keep the first ``keep`` lines of a JSONL file (atomically) and return them parsed."""
    lines = path.read_text(encoding="utf-8").splitlines()[:keep] if path.exists() else []
    if len(lines) < keep:
        raise ValueError(f"{path} has {len(lines)} lines but the checkpoint recorded {keep}: the metrics file "
                         "was modified or belongs to another run")
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(path)
    return [json.loads(line) for line in lines]


def _to_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, (int, float)):
        return float(value)
    return value


def write_summary(output_dir: Path, summary: dict[str, Any], accelerator) -> None:
    """The short end-of-run summary: summary.json, and the same printed."""
    if not accelerator.is_main_process:
        return
    path = Path(output_dir) / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=_to_float), encoding="utf-8")
    tmp.replace(path)
    width = max(len(k) for k in summary) if summary else 0
    print("\n".join(f"  {k.ljust(width)}  {_format(v)}" for k, v in summary.items()))


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def save_pretrained_atomic(model, tokenizer, path: str | Path, accelerator=None, extra_files: dict[str, Any] | None = None) -> Path:
    """save_pretrained (safetensors) into a temporary folder, fsync, then rename over ``path``,
    so a crash never leaves a half-written model where a finished one is expected.
    ``extra_files`` maps file names to JSON-serialisable objects written beside the weights."""
    path = Path(path)
    is_main = accelerator is None or accelerator.is_main_process
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
        accelerator.wait_for_everyone()
    if is_main:
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, obj in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(obj, indent=2), encoding="utf-8")
        _fsync_tree(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return path


def _fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def holdout_split(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministically hold out ``fraction`` of ``items`` for evaluation."""
    if fraction <= 0:
        return items, []
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = max(1, int(round(fraction * len(items))))
    held = set(order[:n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def batches_for_this_process(batches: list[list[int]], accelerator) -> list[list[int]]:
    """Deal whole batches round-robin to the processes (batch k to process k mod N), dropping the
    tail so every process runs the same number of steps: N processes with batch B then see
    exactly the examples one process with batch N*B would, step by step."""
    n = accelerator.num_processes
    usable = len(batches) - len(batches) % n
    return batches[accelerator.process_index:usable:n]


def to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def weights_in_sync(model, accelerator) -> bool:
    """True when every process holds the same weights (DDP should guarantee it; a mismatch means a
    process skipped a step or synchronisation was bypassed). Compares two float64 checksums per process."""
    params = [p.detach().double() for p in accelerator.unwrap_model(model).parameters()]
    local = torch.stack([sum(p.sum() for p in params), sum((p * p).sum() for p in params)]).to(accelerator.device)
    gathered = accelerator.gather(local.unsqueeze(0)).view(-1, 2)  # (num_processes, 2)
    return bool(torch.allclose(gathered, gathered[:1].expand_as(gathered), rtol=0, atol=0))


def finish_run(model, tokenizer, summary: dict[str, Any], config, accelerator, logger, stage: str,
               extra_files: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save the trained model (atomically, with a note of the stage that produced it), check
    that all processes agree on the weights, close the logs and write the summary."""
    output_dir = Path(config.output_dir)
    info = {TRAINING_INFO_FILE: {"stage": stage, "base_model": config.model_name_or_path}}
    save_pretrained_atomic(model, tokenizer, output_dir / "model", accelerator, extra_files={**info, **(extra_files or {})})
    summary["model"] = str(output_dir / "model")
    summary["processes_in_sync"] = weights_in_sync(model, accelerator)
    summary["wall_time_s"] = logger.elapsed()
    logger.close()
    write_summary(output_dir, summary, accelerator)
    # No process exits before the summary exists. The barrier also lets gloo's worker thread free
    # the last all-gather's tensors while this thread still runs: freed at interpreter exit instead,
    # they abort the process ("terminate called without an active exception").
    accelerator.wait_for_everyone()
    return summary
