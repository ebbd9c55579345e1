"""Running one stage of a multi-stage run (``rlhf pipeline``, ``rlhf demo``): with ``resume`` a
stage that already finished is skipped and its summary returned, so a killed run picks up at
the stage it was in (which itself resumes from its newest intact checkpoint)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from rlhf.config.base import ConfigError


def finished_summary(output_dir: str | Path) -> dict | None:
    """A stage's summary if it ran to the end (the summary is written last, atomically)."""
    path = Path(output_dir) / "summary.json"
    if path.is_file() and (Path(output_dir) / "model").is_dir():
        return json.loads(path.read_text(encoding="utf-8"))
    return None


class StageClock:
    """Runs the named steps of a composite command (``rlhf demo``, ``rlhf overopt``), printing a
    header before each, and keeps each one's wall seconds in ``times``."""

    def __init__(self, label: str):
        self.label = label
        self.times: dict[str, float | None] = {}

    def __call__(self, name: str, function: Callable[..., Any], *args) -> Any:
        start = time.time()
        print(f"\n=== {self.label}: {name}", flush=True)
        result = function(*args)
        self.times[name] = round(time.time() - start, 1)
        return result


def run_stage(label: str, name: str, runner: Callable[[Any], dict], stage_config: Any, resume: bool) -> tuple[dict, bool]:
    """``runner(stage_config)``, or its saved summary when ``resume`` and it already finished.
    Returns (summary, whether it ran now)."""
    done = finished_summary(stage_config.output_dir) if resume else None
    if done is not None:
        print(f"\n=== {label}: {name} already finished in {stage_config.output_dir}, skipped", flush=True)
        return done, False
    print(f"\n=== {label}: {name} -> {stage_config.output_dir}", flush=True)
    return runner(stage_config), True


def check_stages(stage_configs: list[tuple[str, Any]], resume: bool) -> None:
    """Before any stage runs, what each stage checks at its start (``check_output_dir``): its input
    paths exist, except the models earlier stages will write, its output folder may be written, and
    its reward functions load and score two prompts. Stages that ``resume`` will skip are not checked."""
    from rlhf.trainers.online import check_reward_functions
    from rlhf.trainers.setup import check_output_dir

    produced: list[str] = []
    for name, stage_config in stage_configs:
        if not (resume and finished_summary(stage_config.output_dir) is not None):
            try:
                check_output_dir(stage_config, produced=tuple(produced))
            except ConfigError as err:
                raise ConfigError(f"stage {name}: {err}") from err
            if getattr(stage_config, "reward_function", "") or getattr(stage_config, "gold_reward_function", ""):
                check_reward_functions(stage_config)  # called once on two prompts, as PPO does at its start
        produced.append(str(Path(stage_config.output_dir) / "model"))
