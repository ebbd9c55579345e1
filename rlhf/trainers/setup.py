"""The start of every run: the Accelerator, the seeds, and the output folder.

The folder is handled in two steps so that nothing is written before the inputs are known to be
good: ``check_output_dir`` (first thing in every run; reads only) and ``prepare_output_dir``
(once the models and data have loaded; creates, cleans and writes)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import torch

from rlhf.config.base import ConfigError, check_input_paths, input_paths, report_to_list, save_config
from rlhf.trainers import checkpoint, saving
from rlhf.trainers.resume import check_resume_config, check_resume_path
from rlhf.trainers.sharding import enable_fsdp_on_cpu

# A folder holding any of these holds a run: refused unless --resume or --overwrite_output_dir.
RUN_MARKERS = ("config.yaml", "summary.json", "model", "checkpoints", "metrics.jsonl", "tensorboard")
# What a run writes; a run that starts over deletes the previous run's (config.yaml is rewritten).
RUN_OUTPUTS = ("tensorboard", "checkpoints", "metrics.jsonl", "summary.json", "samples.jsonl", "model",
               "value_model", "adapter")


def make_accelerator(config):
    """An Accelerator for this run. On a machine without a GPU we pass ``cpu=True`` so that
    ``torchrun --nproc_per_node N`` gives N CPU processes over gloo (without it accelerate
    ignores torchrun's environment on the CPU); an FSDP config file (``accelerate launch
    --config_file examples/accelerate/fsdp2.yaml``) then gives FSDP2 over gloo. Trackers of ``report_to`` other than TensorBoard
    (which RunLogger writes itself) go to accelerate's ``log_with``."""
    from accelerate import Accelerator

    trackers = [name for name in report_to_list(getattr(config, "report_to", "none")) if name != "tensorboard"]
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision="bf16" if config.bf16 else "no",
        gradient_accumulation_steps=getattr(config, "gradient_accumulation_steps", 1),
        log_with=trackers or None,
    )
    enable_fsdp_on_cpu(accelerator, config)  # an FSDP config file on CPU processes: FSDP2 over gloo
    return accelerator


def seed_everything(seed: int) -> None:
    from accelerate.utils import set_seed

    set_seed(seed)


def run_files(output_dir: str | Path) -> list[str]:
    """The marks of a run that ``output_dir`` holds (``model/``, ``config.yaml``, ...), if any."""
    output_dir = Path(output_dir)
    return [name + ("/" if (output_dir / name).is_dir() else "") for name in RUN_MARKERS if (output_dir / name).exists()]


def check_output_dir(config, produced: tuple[str, ...] = ()) -> Path:
    """Everything about the run's paths that can be checked without writing, before anything loads:
    the inputs exist (except ``produced``, written by an earlier pipeline stage) and none lies where
    this run writes; output_dir can be created; a run already there is continued (--resume, with the
    same options) or replaced (--overwrite_output_dir), never silently mixed or overwritten."""
    output_dir = Path(config.output_dir)
    check_input_paths(config, produced)
    _check_inputs_outside_outputs(config, output_dir)
    _check_creatable(output_dir)
    held = run_files(output_dir)
    if held and not (config.resume or config.overwrite_output_dir):
        raise ConfigError(f"output_dir {output_dir} already holds a run ({', '.join(held)}): pass --resume to "
                          "continue it, --overwrite_output_dir to replace it, or choose another --output_dir")
    if config.resume not in ("", "latest"):
        check_resume_path(config)
    if config.resume:
        check_resume_config(config, output_dir)
    return output_dir


def _check_inputs_outside_outputs(config, output_dir: Path) -> None:
    """An input this run would overwrite or delete (``rlhf rm --model_name_or_path runs/out/model
    --output_dir runs/out``) is refused whatever the options."""
    out = output_dir.resolve()
    written = [out / name for name in (*RUN_OUTPUTS, "config.yaml")]
    for name, path in input_paths(config):
        resolved = Path(path).resolve()
        inside = out == resolved or out in resolved.parents
        if inside and (config.overwrite_output_dir or out == resolved
                       or any(w == resolved or w in resolved.parents for w in written)):
            raise ConfigError(f"{name} {path} lies inside output_dir {output_dir}, which this run writes over: "
                              "choose another --output_dir (or move the input out of it)")


def _check_creatable(output_dir: Path) -> None:
    """output_dir exists as a folder, or its nearest existing parent is a folder we may write in."""
    existing = output_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot write to output_dir {str(output_dir)!r}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write to output_dir {str(output_dir)!r}: no permission to write in {existing}")


def prepare_output_dir(config, accelerator) -> Path:
    """After the models and data have loaded: create the output directory and prove it is writable
    now, not after an hour of training; delete what a killed run left half-written and, when this
    run starts over, the previous run's outputs; then save the resolved config there."""
    output_dir = Path(config.output_dir)
    accelerator.wait_for_everyone()  # every process has checked the folder before it changes
    if accelerator.is_main_process:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            probe = output_dir / f".write-test-{uuid.uuid4().hex}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise ConfigError(f"cannot write to output_dir {str(output_dir)!r}: {err}") from err
        for stale in checkpoint.remove_stale_temporaries(output_dir) + saving.remove_stale_temporaries(output_dir):
            print(f"removed {stale}, left by a run killed while saving", flush=True)
        if _starts_over(config, output_dir):
            remove_run_outputs(output_dir)
        save_config(config, output_dir)
    accelerator.wait_for_everyone()
    return output_dir


def _starts_over(config, output_dir: Path) -> bool:
    """True unless this run continues from a checkpoint."""
    if config.resume == "latest":
        return checkpoint.find_resumable(output_dir, log=lambda *args: None) is None
    return not config.resume


def remove_run_outputs(output_dir: Path) -> None:
    """Delete a previous run's outputs, so TensorBoard files do not pile up and nothing left in the
    folder describes a model this run did not train."""
    for name in RUN_OUTPUTS:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
