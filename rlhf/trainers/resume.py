"""Which checkpoint ``--resume`` continues from."""

from __future__ import annotations

from pathlib import Path

from rlhf.trainers.checkpoint import find_resumable, validate_checkpoint


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
    path = Path(config.resume)
    problem = validate_checkpoint(path) if path.is_dir() else "not a folder"
    if problem:
        raise ValueError(f"--resume {path}: {problem}")
    return path
