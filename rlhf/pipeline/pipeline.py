"""``rlhf pipeline``: SFT -> reward model -> PPO (and optionally DPO) on your own models and
data from one YAML file, each stage's output feeding the next.

Example ``run.yaml``::

    model_name_or_path: /models/my-base
    output_dir: runs/my-rlhf
    stages: sft,rm,ppo
    sft: {train_file: data/demos.jsonl, num_train_epochs: 2}
    rm:  {train_file: data/comparisons.jsonl}
    ppo: {prompts_file: data/prompts.jsonl, max_steps: 200}

Every stage section takes that stage's options (``rlhf <stage> --help``); the pipeline fills
in the paths that chain the stages (model_name_or_path, reward_model_path, output_dir)
unless the section sets them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from rlhf.config.base import ConfigError, config_from_dict, save_config, stage_options
from rlhf.pipeline.stages import check_stages, run_stage

STAGE_ORDER = ("sft", "rm", "ppo", "dpo")


@dataclass
class PipelineConfig:
    """Chain the stages on one base model; stage sections hold each stage's own options."""

    model_name_or_path: str = field(default="", metadata={"help": "Local base causal LM that SFT starts from."})
    output_dir: str = field(default="runs/pipeline", metadata={"help": "Each stage writes to output_dir/<stage>."})
    stages: str = field(default="sft,rm,ppo", metadata={"help": "Comma-separated stages to run, in pipeline order (sft, rm, ppo, dpo)."})
    seed: int = field(default=0, metadata={"help": "Seed passed to every stage that does not set its own."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bars of every stage."})
    resume: bool = field(
        default=False,
        metadata={"help": "Continue a killed pipeline: finished stages are skipped, the interrupted one resumes from "
                  "its newest intact checkpoint."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the runs in output_dir/<stage> (passed to every stage that does not set it); "
                  "without it, or --resume, a stage folder that holds a run is refused before any stage runs."},
    )
    # Optional[Union[dict, str]]: a mapping from YAML, or a JSON string from the command line (HfArgumentParser
    # cannot parse an ``Any`` field).
    sft: Optional[Union[dict, str]] = field(default=None, metadata={"help": "Options of the SFT stage (a mapping in YAML, or JSON on the command line)."})
    rm: Optional[Union[dict, str]] = field(default=None, metadata={"help": "Options of the reward-model stage."})
    ppo: Optional[Union[dict, str]] = field(default=None, metadata={"help": "Options of the PPO stage."})
    dpo: Optional[Union[dict, str]] = field(default=None, metadata={"help": "Options of the DPO stage."})

    def section(self, stage: str) -> dict[str, Any]:
        return stage_options("pipeline", stage, getattr(self, stage))

    def stage_list(self) -> list[str]:
        stages = [s.strip() for s in self.stages.split(",") if s.strip()]
        unknown = [s for s in stages if s not in STAGE_ORDER]
        if unknown:
            raise ConfigError(f"pipeline: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGE_ORDER)}")
        return sorted(stages, key=STAGE_ORDER.index)

    def validate(self) -> None:
        if self.resume and self.overwrite_output_dir:
            raise ConfigError("pipeline: --resume continues the runs in output_dir and --overwrite_output_dir deletes "
                              "them: pass one of them")
        if not self.model_name_or_path and "sft" in self.stage_list():
            raise ConfigError("pipeline needs model_name_or_path (the base model SFT starts from)")
        for stage in STAGE_ORDER:
            self.section(stage)


CONFIG_CLASS = PipelineConfig


def stage_configs(config: PipelineConfig) -> list[tuple[str, Any]]:
    """Resolve each requested stage's config, chaining outputs to inputs."""
    from rlhf.config.dpo import DPOConfig
    from rlhf.config.ppo import PPOConfig
    from rlhf.config.reward import RewardConfig
    from rlhf.config.sft import SFTConfig

    classes = {"sft": SFTConfig, "rm": RewardConfig, "ppo": PPOConfig, "dpo": DPOConfig}
    root = Path(config.output_dir)
    sft_model = str(root / "sft" / "model") if "sft" in config.stage_list() else config.model_name_or_path
    rm_model = str(root / "rm" / "model")
    chained = {
        "sft": {"model_name_or_path": config.model_name_or_path},
        "rm": {"model_name_or_path": sft_model},
        "ppo": {"model_name_or_path": sft_model, "reward_model_path": rm_model},
        "dpo": {"model_name_or_path": sft_model},
    }
    resolved = []
    for stage in config.stage_list():
        if config.resume:
            chained[stage]["resume"] = "latest"
        values = {"output_dir": str(root / stage), "seed": config.seed, "disable_tqdm": config.disable_tqdm,
                  "overwrite_output_dir": config.overwrite_output_dir, **chained[stage], **config.section(stage)}
        if stage == "ppo" and values.get("reward_function"):
            values.pop("reward_model_path", None)
        resolved.append((stage, config_from_dict(classes[stage], values)))
    return resolved


def run(config: PipelineConfig) -> dict[str, dict]:
    from rlhf.trainers import dpo, ppo, reward, sft

    runners = {"sft": sft.run, "rm": reward.run, "ppo": ppo.run, "dpo": dpo.run}
    configs = stage_configs(config)  # all resolved and validated before any stage starts
    check_stages(configs, config.resume)  # and every input path and output folder of every stage
    save_config(config, config.output_dir, name="pipeline_config.yaml")
    results = {}
    for stage, stage_config in configs:
        results[stage], _ = run_stage("rlhf pipeline", stage, runners[stage], stage_config, config.resume)
    return results
