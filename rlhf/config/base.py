"""Config machinery shared by every stage: YAML files, command-line overrides, saving.

Each stage has one dataclass (``SFTConfig``, ``RewardConfig``, ...) whose fields carry
their documentation in ``metadata["help"]``. A run is configured, in increasing
priority, by the dataclass defaults, a YAML file (``--config run.yaml``) and
command-line flags (``--learning_rate 1e-5``). The parser is transformers'
``HfArgumentParser``, so flags look exactly like Hugging Face's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from rlhf.atomic_io import write_text_atomic


C = TypeVar("C")


class ConfigError(ValueError):
    """A config file or a combination of options a run cannot start with."""


@dataclass
class TrainingConfig:
    """Options every training stage shares; names follow transformers' TrainingArguments."""

    model_name_or_path: str = field(
        default="",
        metadata={"help": "Local folder of a causal LM in save_pretrained format. Nothing is ever "
                  "downloaded. The `rlhf` command defaults it to the embedded base model shipped with the package."},
    )
    output_dir: str = field(
        default="runs/out",
        metadata={"help": "Where the run writes its config, metrics, TensorBoard events and checkpoints."},
    )
    seed: int = field(default=0, metadata={"help": "Seed for every random number generator; same seed, same run."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate of AdamW."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (decoupled)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    optim: str = field(
        default="adamw_torch_fused",
        metadata={"help": "Optimizer, named as in transformers' TrainingArguments: adamw_torch_fused (one fused kernel "
                  "over all parameters; on a CPU ~8x faster per step than the per-tensor loop) or adamw_torch."},
    )
    lr_scheduler_type: str = field(
        default="linear",
        metadata={"help": "Learning-rate schedule after warm-up: linear, cosine or constant."},
    )
    warmup_ratio: float = field(default=0.0, metadata={"help": "Fraction of the optimizer steps spent warming up linearly from 0."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the global gradient norm to this value (0 disables)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Examples per process per forward pass."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Forward passes accumulated into one optimizer step."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training data (ignored when max_steps > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps to run; -1 means derive them from num_train_epochs."})
    logging_steps: int = field(default=10, metadata={"help": "Write metrics every this many optimizer steps."})
    save_steps: int = field(
        default=0,
        metadata={"help": "Save a resumable checkpoint every this many steps (0: none; the final model is always saved). "
                  "SIGINT/SIGTERM also save one."},
    )
    save_total_limit: int = field(default=2, metadata={"help": "Keep only the newest this many checkpoints (0: keep all)."})
    resume: str = field(
        default="",
        metadata={"help": "Continue a killed run: `--resume` (or `--resume latest`) takes the newest intact checkpoint "
                  "in output_dir; `--resume PATH` a given one."},
    )
    max_nonfinite_skips: int = field(
        default=0,
        metadata={"help": "Skip up to this many steps whose loss or gradient is NaN/inf; past that (default: at once) stop."},
    )
    report_to: str = field(
        default="tensorboard",
        metadata={"help": "Where metrics go besides metrics.jsonl: tensorboard or none."},
    )
    bf16: bool = field(
        default=False,
        metadata={"help": "bf16 autocast. Only where the device runs bf16 natively (GPUs); a CPU without it is ~30x slower."},
    )
    max_length: int = field(default=512, metadata={"help": "Longest tokenised sequence (prompt + response) in tokens."})
    truncation: bool = field(
        default=True,
        metadata={"help": "Truncate sequences longer than max_length; when false, such a record is an error."},
    )
    skip_bad_records: bool = field(
        default=False,
        metadata={"help": "Report and skip malformed data records (with a count at the end) instead of stopping."},
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow model code shipped with the checkpoint to run. Off unless you trust its source."},
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})

    def validate(self) -> None:
        """Rules that span fields; raise ConfigError with a message a user understands."""
        if not self.model_name_or_path:
            raise ConfigError("model_name_or_path is required: a local folder of a model in save_pretrained format")
        if self.lr_scheduler_type not in ("linear", "cosine", "constant"):
            raise ConfigError(f"lr_scheduler_type must be linear, cosine or constant, got {self.lr_scheduler_type!r}")
        if self.optim not in ("adamw_torch_fused", "adamw_torch"):
            raise ConfigError(f"optim must be adamw_torch_fused or adamw_torch, got {self.optim!r}")
        if self.report_to not in ("tensorboard", "none"):
            raise ConfigError(f"report_to must be tensorboard or none, got {self.report_to!r}")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ConfigError("set max_steps > 0 or num_train_epochs > 0")


def parse_name_values(text: str, option: str, form: str = "name=value") -> dict[str, float]:
    """``"a=0.5, b=1"`` -> ``{"a": 0.5, "b": 1.0}``; a ConfigError naming ``option`` on a bad item."""
    values = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"{option}: expected {form}, got {item!r}")
    return values


def load_yaml_config(path: str | Path, config_cls: type) -> dict[str, Any]:
    """Read a YAML mapping of option -> value, rejecting keys the stage does not know."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {', '.join(unknown)} for {config_cls.__name__}")
    return values


def parse_config(config_cls: type[C], argv: Sequence[str] | None, prog: str | None = None,
                 description: str | None = None, defaults: dict[str, Any] | None = None) -> C:
    """Build a stage config from the dataclass defaults < ``defaults`` (the caller's, e.g. the
    CLI's default model) < ``--config`` YAML < command-line flags, then validate it."""
    from transformers import HfArgumentParser

    argv = _expand_bare_resume(list(argv) if argv is not None else None, config_cls)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)

    parser = HfArgumentParser(config_cls, prog=prog, description=description)
    parser.add_argument("--config", default=None, help="YAML file of options; flags on the command line override it.")
    if defaults:
        parser.set_defaults(**defaults)
    if known.config:
        parser.set_defaults(**load_yaml_config(known.config, config_cls))
    # The parser also returns a namespace holding --config; the dataclass comes first.
    outputs = parser.parse_args_into_dataclasses(args=list(rest), look_for_args_file=False,
                                                 return_remaining_strings=True)
    config, remaining = outputs[0], outputs[-1]
    if remaining:
        raise ConfigError(f"unknown option(s) {' '.join(remaining)} for {prog or config_cls.__name__} (see --help)")
    config.validate()
    return config


def _expand_bare_resume(argv: list[str] | None, config_cls: type) -> list[str] | None:
    """``--resume`` alone means ``--resume latest`` (``true`` where resume is a yes/no option)."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    if argv is None or "resume" not in fields:
        return argv
    bare_value = "latest" if fields["resume"].type in (str, "str") else "true"
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--resume" and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            out.append(bare_value)
    return out


def config_from_dict(config_cls: type[C], values: dict[str, Any]) -> C:
    """Build and validate a config from a plain mapping (e.g. one section of a pipeline YAML)."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for {config_cls.__name__}")
    config = config_cls(**values)
    config.validate()
    return config


def save_config(config: Any, output_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config next to the run's outputs, so the run can be repeated exactly."""
    return write_text_atomic(Path(output_dir) / name,
                             yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(config))), sort_keys=False))
