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
import difflib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from rlhf.atomic_io import write_text_atomic
from rlhf.errors import UserError


C = TypeVar("C")


class ConfigError(UserError, ValueError):
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
        metadata={"help": "Where the run writes its config, metrics, TensorBoard events and checkpoints. A folder "
                  "that already holds a run is refused unless --resume or --overwrite_output_dir."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the run in output_dir: its model, checkpoints, metrics and TensorBoard files are "
                  "deleted once the new run's inputs have loaded. An input inside output_dir is still refused."},
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
    keep_checkpoints: bool = field(
        default=True,
        metadata={"help": "Keep output_dir/checkpoints once the run has finished; false deletes them after the final "
                  "model and summary are saved, so only the model stays."},
    )
    resume: str = field(
        default="",
        metadata={"help": "Continue a killed run: `--resume` (or `--resume latest`) takes the newest intact checkpoint "
                  "in output_dir; `--resume PATH` a given one. Every option must equal the saved config.yaml's, "
                  "except those in resume_allow_changes."},
    )
    resume_allow_changes: str = field(
        default="",
        metadata={"help": "With --resume: comma-separated options that may differ from the run's saved config.yaml "
                  "(e.g. max_steps,save_steps); any other difference is an error."},
    )
    max_nonfinite_skips: int = field(
        default=0,
        metadata={"help": "Skip up to this many steps whose loss or gradient is NaN/inf; past that (default: at once) stop."},
    )
    report_to: str = field(
        default="tensorboard",
        metadata={"help": "Where metrics go besides metrics.jsonl: tensorboard, wandb, mlflow, trackio, comet_ml "
                  "(several comma-separated; each needs its package installed) or none."},
    )
    bf16: bool = field(
        default=False,
        metadata={"help": "bf16 autocast. Only where the device runs bf16 natively (GPUs); a CPU without it is ~30x slower."},
    )
    max_length: int = field(
        default=0,
        metadata={"help": "Longest tokenised sequence (prompt + response) in tokens; 0: the model's position limit "
                  "(max_position_embeddings). A larger value than that limit is an error at start."},
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in the backward pass instead of storing them: less memory, "
                  "about a third more compute (transformers' gradient_checkpointing_enable)."},
    )
    # LoRA (peft), TRL's option names; what each stage adapts is in docs/lora.md
    use_peft: bool = field(
        default=False,
        metadata={"help": "Train LoRA adapters on a frozen backbone instead of all weights (the reward and value "
                  "models' scalar heads stay fully trained). The frozen reference of PPO and DPO is then the policy "
                  "with its adapters disabled, so no second copy of the model is loaded. The saved model "
                  "(output_dir/model) has the adapters merged; the adapter alone is saved to output_dir/adapter."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (the update is scaled by alpha / r)."})
    lora_dropout: float = field(
        default=0.0,
        metadata={"help": "Dropout on the LoRA input. PPO and DPO need a deterministic forward (the ratio pi / pi_old, "
                  "the log-ratios to the reference), so there any value is set to 0, as for the model's own dropout."},
    )
    lora_target_modules: str = field(
        default="",
        metadata={"help": "Comma-separated module names to adapt, or all-linear; empty: peft's default for the "
                  "architecture (GPT-2: c_attn; Llama: q_proj,v_proj)."},
    )
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
        report_to_list(self.report_to)
        if self.resume and self.overwrite_output_dir:
            raise ConfigError("--resume continues the run in output_dir and --overwrite_output_dir deletes it: "
                              "pass one of them")
        unknown = sorted(set(self.allowed_changes()) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"resume_allow_changes: unknown option(s) {', '.join(unknown)}")
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length < 0 or self.max_length == 1:
            raise ConfigError(f"max_length must be 0 (the model's limit) or at least 2, got {self.max_length}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ConfigError("set max_steps > 0 or num_train_epochs > 0")
        if self.use_peft and self.lora_r <= 0:
            raise ConfigError(f"lora_r must be > 0, got {self.lora_r}")
        if self.use_peft and getattr(self, "ref_model_path", ""):
            raise ConfigError("with use_peft the reference is the policy with adapters disabled: leave ref_model_path empty")

    def allowed_changes(self) -> list[str]:
        """The options ``--resume`` lets differ from the saved config (``resume_allow_changes``)."""
        return [name.strip() for name in self.resume_allow_changes.split(",") if name.strip()]


# --report_to: tracker -> the module it needs (also its pip package). TensorBoard is written by our
# own SummaryWriter (it purges the steps after a resumed checkpoint); the others go through accelerate.
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio",
                    "comet_ml": "comet_ml"}


def report_to_list(report_to: str) -> list[str]:
    """``"tensorboard,wandb"`` -> ["tensorboard", "wandb"]; ``"none"`` -> []. A ConfigError for an
    unknown tracker or one whose package is not installed (checked now, before anything loads)."""
    names = list(dict.fromkeys(s.strip() for s in report_to.split(",") if s.strip()))
    if names == ["none"]:
        return []
    if "none" in names:
        raise ConfigError(f"report_to: none means no tracker, so it cannot be combined with others, got {report_to!r}")
    unknown = [name for name in names if name not in TRACKER_PACKAGES]
    if unknown or not names:
        raise ConfigError(f"report_to: unknown tracker {', '.join(unknown) or repr(report_to)}; choose from "
                          f"{', '.join(TRACKER_PACKAGES)} (several comma-separated) or none")
    for name in names:
        if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
            raise ConfigError(f"report_to {name} needs the {TRACKER_PACKAGES[name]} package, which is not installed: "
                              f"pip install {TRACKER_PACKAGES[name]} (or leave {name} out of --report_to)")
    return names


# Options that name an input of a run, by field name; every stage and the pipeline check them
# before anything loads (a typo in prompts_file is found before SFT runs, not after).
MODEL_PATH_FIELDS = ("model_name_or_path", "ref_model_path", "reward_model_path", "value_model_path")
FILE_FIELDS = ("train_file", "eval_file", "prompts_file", "eval_prompts_file")
FUNCTION_FIELDS = ("reward_function", "gold_reward_function")


def input_paths(config: Any) -> list[tuple[str, str]]:
    """(option, path) for every input path ``config`` names: model folders (each of a comma-separated
    reward_model_path), data files, and the file of a function given as ``path/to/file.py:name``."""
    found = []
    for name in MODEL_PATH_FIELDS + FILE_FIELDS + FUNCTION_FIELDS:
        value = getattr(config, name, "")
        if not value or not isinstance(value, str):
            continue
        if name in FUNCTION_FIELDS:
            file_part = value.rpartition(":")[0]
            values = [file_part] if file_part.endswith(".py") else []  # module:name is imported, not a path
        else:
            values = value.split(",") if name == "reward_model_path" else [value]
        found += [(name, v.strip()) for v in values if v.strip()]
    return found


def check_input_paths(config: Any, produced: Sequence[str] = (), label: str = "") -> None:
    """A ConfigError naming every input path of ``config`` that does not exist, except those in
    ``produced`` (written by an earlier stage of the same pipeline)."""
    made = {os.path.normpath(p) for p in produced}
    problems = []
    for name, path in input_paths(config):
        if os.path.normpath(path) in made or Path(path).exists():
            continue
        if name in MODEL_PATH_FIELDS:
            problems.append(f"{name} {path!r} is not a local folder (rlhf never downloads from the Hugging Face Hub: "
                            "pass a folder saved with save_pretrained)")
        else:
            problems.append(f"{name} {path!r} does not exist")
    if problems:
        raise ConfigError(f"{label}{'; '.join(problems)}")


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
    # allow_abbrev=False: argparse would take `--max_step 3` as --max_steps; only exact names count.
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)

    parser = HfArgumentParser(config_cls, prog=prog, description=description, allow_abbrev=False)
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
        raise ConfigError(f"unknown option(s) {' '.join(remaining)} for {prog or config_cls.__name__}"
                          f"{_did_you_mean(remaining, config_cls)} (see --help)")
    config.validate()
    return config


def _did_you_mean(remaining: Sequence[str], config_cls: type) -> str:
    """``; did you mean --max_steps?`` for a misspelt option, else ''."""
    names = [f.name for f in dataclasses.fields(config_cls)]
    guesses = []
    for arg in remaining:
        if arg.startswith("--"):
            guesses += difflib.get_close_matches(arg[2:].split("=")[0], names, n=1)
    return f"; did you mean {', '.join('--' + g for g in guesses)}?" if guesses else ""


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


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as plain values, exactly as config.yaml holds them (so the two compare equal)."""
    return yaml.safe_load(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(config))), sort_keys=False))


def save_config(config: Any, output_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config next to the run's outputs, so the run can be repeated exactly."""
    return write_text_atomic(Path(output_dir) / name, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def stage_options(command: str, name: str, value) -> dict[str, Any]:
    """The options a composite command (``rlhf pipeline``, ``rlhf iterate``) passes to one stage:
    its section ``name``, a mapping from YAML or a JSON object from the command line; empty if unset."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise ConfigError(f"{command}: --{name} must be a JSON object: {err}") from err
    if not isinstance(value, dict):
        raise ConfigError(f"{command}: section {name!r} must be a mapping of options, got {type(value).__name__}")
    return dict(value)
