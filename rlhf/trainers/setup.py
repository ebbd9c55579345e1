"""The start of every run: the Accelerator, the seeds, and an output folder proved writable."""

from __future__ import annotations

import uuid
from pathlib import Path

import torch

from rlhf.config.base import ConfigError, save_config


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


def seed_everything(seed: int) -> None:
    from accelerate.utils import set_seed

    set_seed(seed)


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
