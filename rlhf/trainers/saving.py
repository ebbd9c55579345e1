"""The end of every run: the trained model saved atomically, a check that all processes hold
the same weights, and the summary."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from rlhf.atomic_io import fsync_dir, fsync_tree, write_json_atomic
from rlhf.models.loading import TRAINING_INFO_FILE
from rlhf.trainers.checkpoint import CHECKPOINT_DIR
from rlhf.trainers.run_logger import write_summary
from rlhf.trainers.sharding import full_weights_for_saving, gathered


def remove_stale_temporaries(output_dir: str | Path) -> list[Path]:
    """Delete the ``.<name>.tmp-*`` and ``.<name>.old-*`` leftovers of a save (or an atomic file
    write) that a kill interrupted. Call only before this run saves anything."""
    output_dir = Path(output_dir)
    stale = sorted([*output_dir.glob(".*.tmp-*"), *output_dir.glob(".*.old-*")]) if output_dir.is_dir() else []
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def save_pretrained_atomic(model, tokenizer, path: str | Path, accelerator=None, extra_files: dict[str, Any] | None = None) -> Path:
    """save_pretrained (safetensors) into a temporary folder, fsync, then rename over ``path``,
    so a crash never leaves a half-written model where a finished one is expected.
    ``extra_files`` maps file names to JSON-serialisable objects written beside the weights."""
    path = Path(path)
    is_main = accelerator is None or accelerator.is_main_process
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
        accelerator.wait_for_everyone()
    model, state_dict = full_weights_for_saving(model, accelerator)  # FSDP2: gathered from every process
    if is_main:
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        model.save_pretrained(tmp, safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, obj in (extra_files or {}).items():
            write_json_atomic(tmp / name, obj)
        fsync_tree(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
        fsync_dir(path.parent)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return path


def save_adapter_and_merge(model, tokenizer, output_dir: str | Path, accelerator):
    """LoRA's two outputs, the same in every stage: the adapter alone in output_dir/adapter (a
    reward model's with its scalar head beside it) and, returned, the model with its adapters
    merged into the weights, which ``finish_run`` saves as output_dir/model. Every process merges,
    so the weights stay comparable across processes."""
    from rlhf.models.lora import adapter_to_save, merge_adapters

    model = accelerator.unwrap_model(model)
    save_pretrained_atomic(adapter_to_save(model), tokenizer, Path(output_dir) / "adapter", accelerator)
    return merge_adapters(model)


@torch.no_grad()
def weights_in_sync(model, accelerator) -> bool:
    """True when every process holds the same weights (DDP should guarantee it; a mismatch means a
    process skipped a step or synchronisation was bypassed). Compares two float64 checksums per process."""
    with gathered(accelerator):  # FSDP2: the full weights, which every process must have assembled alike
        params = [p.detach().double() for p in accelerator.unwrap_model(model).parameters()]
        local = torch.stack([sum(p.sum() for p in params), sum((p * p).sum() for p in params)]).to(accelerator.device)
    sums = accelerator.gather(local.unsqueeze(0)).view(-1, 2)  # (num_processes, 2)
    return bool(torch.allclose(sums, sums[:1].expand_as(sums), rtol=0, atol=0))


def finish_run(model, tokenizer, summary: dict[str, Any], config, accelerator, logger, stage: str,
               extra_files: dict[str, Any] | None = None, training_info: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """Save the trained model (atomically, with a note of the stage that produced it and
    ``training_info``, e.g. the data's "prompt_format"), check that all processes agree on the
    weights, close the logs and write the summary."""
    output_dir = Path(config.output_dir)
    info = {TRAINING_INFO_FILE: {"stage": stage, "base_model": config.model_name_or_path, **(training_info or {})}}
    save_pretrained_atomic(model, tokenizer, output_dir / "model", accelerator, extra_files={**info, **(extra_files or {})})
    summary["model"] = str(output_dir / "model")
    summary["processes_in_sync"] = weights_in_sync(model, accelerator)
    summary["wall_time_s"] = logger.elapsed()
    logger.close()
    write_summary(output_dir, summary, accelerator)
    if not getattr(config, "keep_checkpoints", True) and accelerator.is_main_process:
        shutil.rmtree(output_dir / CHECKPOINT_DIR, ignore_errors=True)  # the run is complete: the model is enough
    # No process exits before the summary exists. The barrier also lets gloo's worker thread free
    # the last all-gather's tensors while this thread still runs: freed at interpreter exit instead,
    # they abort the process ("terminate called without an active exception").
    accelerator.wait_for_everyone()
    return summary
