"""The ``rlhf`` command: one subcommand per stage, each configured by its dataclass.

``rlhf <stage> --help`` lists every option of that stage with its default;
``rlhf <stage> --config run.yaml --learning_rate 1e-5`` loads a YAML file and overrides it.
A mistake a user can fix (``rlhf.errors.UserError``) is printed as one line saying what to do;
a traceback means a bug (or ``--debug``).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import warnings
from typing import Sequence

# stage -> (module holding CONFIG_CLASS and run(config), one-line description). A command group
# (``rlhf label init``) is a module holding COMMANDS, a dict of the same shape, instead.
STAGES: dict[str, tuple[str, str]] = {
    "sft": ("rlhf.trainers.sft", "Stage 1: supervised fine-tuning on (prompt, completion) demonstrations."),
    "rm": ("rlhf.trainers.reward", "Stage 2: train a reward model on pairwise comparisons (Bradley-Terry)."),
    "ppo": ("rlhf.trainers.ppo", "Stage 3: PPO against a frozen reward model with a per-token KL penalty."),
    "grpo": ("rlhf.trainers.grpo", "Critic-free RL: GRPO, Dr. GRPO, RLOO, REINFORCE++ (G responses per prompt)."),
    "dpo": ("rlhf.trainers.dpo", "Direct Preference Optimization (and IPO, hinge, conservative DPO)."),
    "demo": ("rlhf.pipeline.demo", "Run the whole pipeline on the embedded task and measure whether RLHF worked."),
    "pipeline": ("rlhf.pipeline.pipeline", "Run SFT -> RM -> PPO on your own models and data from one YAML file."),
    "plan": ("rlhf.evaluation.plan", "Memory per device of PPO's four roles, from the models' config.json alone."),
    "gsm8k-eval": ("rlhf.evaluation.gsm8k", "GSM8K test accuracy of a policy: greedy, a fixed subset, with a standard error."),
    "best-of-n": ("rlhf.evaluation.best_of_n", "Sample n responses per prompt, keep the one the reward scores highest."),
    "rm-ensemble": ("rlhf.trainers.reward_ensemble", "Train K reward models differing in seed (and data bootstrap)."),
    "iterate": ("rlhf.pipeline.iterate", "Iterative RLHF: rounds of sample, label, reward model, policy, evaluate."),
    "overopt": ("rlhf.pipeline.overopt", "Measure reward over-optimisation on the embedded task (Gao et al. curves)."),
    "ai": ("rlhf.cli.ai", "Feedback from AI: judges rank candidates, critique-and-revision (docs/ai_feedback.md)."),
    "label": ("rlhf.cli.label", "Feedback from people: a labeling project, its labelers, export (docs/labeling.md)."),
    "serve": ("rlhf.cli.serve", "The web app: labeling, admin and the dashboard of runs (docs/labeling.md)."),
}


def _usage() -> str:
    lines = ["usage: rlhf <stage> [--config FILE.yaml] [--option value ...]", "", "stages:"]
    width = max(len(name) for name in STAGES)
    for name, (_, description) in STAGES.items():
        lines.append(f"  {name.ljust(width)}  {description}")
    lines += ["", "`rlhf <stage> --help` lists every option of a stage and its default.",
              "--debug (anywhere on the line) shows the full traceback of an error instead of one line."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Never reach the Hub: every model and dataset is a local path.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("--version", "-V"):
        from rlhf import __version__

        print(f"rlhf {__version__}")
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"rlhf: unknown stage {stage!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    debug = "--debug" in rest
    rest = [arg for arg in rest if arg != "--debug"]
    if not debug:
        warnings.formatwarning = _one_line_warning
    try:
        return _run_stage(stage, rest)
    except KeyboardInterrupt as stop:  # Ctrl-C while loading, or a second one while training
        if debug:
            raise
        message = str(stop) or "interrupted by Ctrl-C; nothing was saved since the last checkpoint (if any)"
        print(f"rlhf {stage}: {message}", file=sys.stderr)
        return 128 + getattr(stop, "signum", signal.SIGINT)  # the shell's convention for "ended by this signal"
    except Exception as err:  # noqa: BLE001 - sorted below: a user's mistake is one line, a bug a traceback
        from rlhf.errors import UserError

        if debug or not isinstance(err, (UserError, FileNotFoundError)):
            raise
        print(f"rlhf {stage}: error: {err}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = _PYTHON_FORMATWARNING
        _close_process_group()


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Our warnings are advice to a user ("88 of 2,312 pairs were truncated; raise --max_length"):
    print the advice, not the source line that raised it (``--debug`` keeps Python's format)."""
    if issubclass(category, UserWarning) and filename.startswith(os.path.dirname(os.path.dirname(__file__))):
        return f"warning: {message}\n"
    return _PYTHON_FORMATWARNING(message, category, filename, lineno, line)


_PYTHON_FORMATWARNING = warnings.formatwarning


def _resolve_command(stage: str, argv: list[str]) -> tuple[str, str, str, list[str]]:
    """(display name, module, description, remaining argv) of ``rlhf stage [subcommand] ...``."""
    module_name, description = STAGES[stage]
    module = importlib.import_module(module_name)
    commands = getattr(module, "COMMANDS", None)
    if commands is None:
        return stage, module_name, description, argv
    width = max(len(name) for name in commands)
    listing = "\n".join(f"  {name.ljust(width)}  {text}" for name, (_, text) in commands.items())
    if not argv or argv[0] in ("-h", "--help", "help"):
        raise _GroupHelp(f"usage: rlhf {stage} <command> [--option value ...]\n\n{description}\n\ncommands:\n{listing}")
    if argv[0] not in commands:
        from rlhf.config.base import ConfigError

        raise ConfigError(f"unknown command {argv[0]!r} for rlhf {stage}; commands:\n{listing}")
    sub_module, sub_description = commands[argv[0]]
    return f"{stage} {argv[0]}", sub_module, sub_description, argv[1:]


class _GroupHelp(Exception):
    """``rlhf <group> --help``: the group's commands, printed to stdout."""


def _run_stage(stage: str, argv: list[str]) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file load/save bars drown our own progress bar
    try:
        name, module_name, description, argv = _resolve_command(stage, argv)
    except _GroupHelp as help_text:
        print(help_text)
        return 0
    module = importlib.import_module(module_name)
    positional = getattr(module, "POSITIONAL", None)  # `rlhf label add-labeler alice` = --name alice
    if positional:
        argv = _positional_to_option(argv, positional)
    from rlhf.config.base import parse_config
    from rlhf.trainers.signals import TrainingInterrupted

    try:
        config = parse_config(module.CONFIG_CLASS, argv, prog=f"rlhf {name}", description=description,
                              defaults=_default_model(module.CONFIG_CLASS))
        module.run(config)
    except TrainingInterrupted as stop:
        print(f"rlhf {name}: {stop}", file=sys.stderr)
        return 128 + stop.signum  # the shell's convention for "ended by this signal"
    return 0


def _positional_to_option(argv: list[str], name: str) -> list[str]:
    """The first bare word that is not an option's value becomes ``--name word`` (every option
    of such a command takes a value: ``--db X alice`` and ``alice --db X`` both work)."""
    rest, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            takes_value = "=" not in arg and i + 1 < len(argv)
            rest += argv[i:i + 2] if takes_value else [arg]
            i += 2 if takes_value else 1
            continue
        return [f"--{name}", arg, *rest, *argv[i + 1:]]
    return rest


def _default_model(config_cls) -> dict[str, str]:
    """The embedded base model as the default ``model_name_or_path`` of every stage: a default
    of the command, not of the configs (which know nothing of the embedded world)."""
    from rlhf.config.base import TrainingConfig
    from rlhf.embedded import EMBEDDED_BASE_MODEL

    return {"model_name_or_path": EMBEDDED_BASE_MODEL} if issubclass(config_cls, TrainingConfig) else {}


def _close_process_group() -> None:
    if "torch.distributed" not in sys.modules:  # interrupted before torch was imported
        return
    # Left open, gloo's worker threads are torn down by the interpreter's exit and a rank can die
    # with "terminate called without an active exception" (SIGABRT) after its work is done.
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
