"""``--resume``: which checkpoint a run continues from, and whether the options still match the run's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rlhf.config.base import ConfigError, config_to_dict
from rlhf.trainers.checkpoint import MANIFEST, find_resumable, validate_checkpoint

# Options that may differ on resume without changing the run: display, the resume request itself,
# where the folder now lives (a run may be moved) and what is kept after the end.
EXEMPT_ON_RESUME = ("disable_tqdm", "resume", "resume_allow_changes", "overwrite_output_dir", "keep_checkpoints",
                    "output_dir")


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
    path = check_resume_path(config)
    problem = validate_checkpoint(path)
    if problem:
        raise ConfigError(f"--resume {path}: the checkpoint is broken: {problem}. Pass --resume alone to continue "
                          "from the newest intact checkpoint in output_dir, or another checkpoint folder")
    return path


def check_resume_path(config) -> Path:
    """The folder of ``--resume PATH``, checked without reading its files (that comes later)."""
    path = Path(config.resume)
    if not path.is_dir():
        raise ConfigError(f"--resume {path}: no such checkpoint folder. Pass --resume alone to continue from the "
                          f"newest intact checkpoint in {config.output_dir}, or a folder such as "
                          f"{Path(config.output_dir) / 'checkpoints' / 'checkpoint-100'}")
    if not (path / MANIFEST).is_file():
        raise ConfigError(f"--resume {path}: not a checkpoint written to the end (no {MANIFEST}). Pass --resume alone "
                          "to continue from the newest intact checkpoint in output_dir, or another checkpoint folder")
    return path


def check_resume_config(config, output_dir: Path) -> None:
    """Refuse to resume with options that differ from the run's saved config.yaml, naming each
    (old -> new), unless ``resume_allow_changes`` lists it: a silently changed option would mix
    two runs in one."""
    saved_path = Path(output_dir) / "config.yaml"
    if config.resume not in ("", "latest") and not saved_path.is_file():
        saved_path = Path(config.resume).parent.parent / "config.yaml"  # checkpoints/checkpoint-N of another run
    if not saved_path.is_file():
        return
    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"--resume: {saved_path} is not valid YAML ({err}); restore it or start over with "
                          "--overwrite_output_dir") from err
    changes = changed_options(saved if isinstance(saved, dict) else {}, config_to_dict(config),
                              exempt=set(EXEMPT_ON_RESUME) | set(config.allowed_changes()))
    if changes:
        listed = ", ".join(f"{name} {old!r} -> {new!r}" for name, old, new in changes)
        names = ",".join(name for name, _, _ in changes)
        raise ConfigError(f"--resume: options differ from the run in {saved_path}: {listed}. Resume with the same "
                          f"options, allow the change with --resume_allow_changes {names}, or start a new run "
                          "(another --output_dir, or --overwrite_output_dir)")


def changed_options(saved: dict[str, Any], new: dict[str, Any], exempt: set[str]) -> list[tuple[str, Any, Any]]:
    """(name, saved value, new value) of each option both configs hold that differs."""
    return [(name, saved[name], value) for name, value in new.items()
            if name in saved and name not in exempt and saved[name] != value]
