"""Crash-safe checkpoints: everything a run needs to continue exactly, in safetensors and JSON.

A checkpoint ``output_dir/checkpoints/checkpoint-<step>/`` holds the weights of every
trainable role (``<role>.safetensors``), the optimizer state (tensors in safetensors,
the rest in JSON), the scheduler, each process's random-number-generator states, and a JSON
trainer state (step, data position, KL controller, reward statistics, metric lines written).
Frozen roles are not copied: the resolved config names them. Under FSDP2 the weights and the
optimizer state are saved as each process's shard instead (``shard_rank<r>.safetensors``,
sharding.py), and must be read back by as many processes.

We do not use ``accelerator.save_state``: it writes the optimizer and RNG states with
``torch.save`` (pickle), and loading pickle can run arbitrary code. Writes are atomic: a
temporary folder is filled, fsynced and renamed, and a manifest with every file's size and
SHA-256 is written last, so a checkpoint that a crash or a bad disk left incomplete is
detected and skipped, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from rlhf.atomic_io import fsync_dir, fsync_tree
from rlhf.config.base import ConfigError
from rlhf.trainers.sharding import SHARD_FILE, SHARD_META, is_fsdp2, shard_from_files, shard_to_files

CHECKPOINT_DIR = "checkpoints"
PREFIX = "checkpoint-"
MANIFEST = "manifest.json"
STATE_FILE = "trainer_state.json"


# ---- optimizer and RNG state as safetensors + JSON --------------------------------------------

def optimizer_state_to_files(optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and plain values (for JSON)."""
    state_dict = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "plain": plain}


def optimizer_state_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["plain"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    plain = {"python": [version, list(internal), gauss],
             "numpy": [np_name, np_keys.tolist(), np_pos, np_has_gauss, np_gauss]}
    return tensors, plain


def restore_rng_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    torch.random.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# ---- writing, validating, finding --------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def step_of(path: Path) -> int:
    return int(path.name[len(PREFIX):])


def validate_checkpoint(path: Path) -> str | None:
    """None if the checkpoint is complete and intact, else what is wrong with it."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return "no manifest (the write did not finish)"
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError) as err:
        return f"unreadable manifest ({err})"
    for name, entry in files.items():
        file = path / name
        if not file.is_file():
            return f"missing {name}"
        if file.stat().st_size != entry["size"] or _sha256(file) != entry["sha256"]:
            return f"{name} does not match its checksum (corrupted)"
    return None


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=step_of)


def remove_stale_temporaries(output_dir: str | Path) -> list[Path]:
    """Delete ``.tmp-checkpoint-*`` folders, the leftovers of a run killed while saving (a finished
    save renames its folder); they are never loaded. Call only before this run saves anything."""
    root = Path(output_dir) / CHECKPOINT_DIR
    stale = sorted(root.glob(f".tmp-{PREFIX}*")) if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def find_resumable(output_dir: str | Path, log=print) -> Path | None:
    """The newest intact checkpoint; broken ones are reported and skipped."""
    for path in reversed(list_checkpoints(output_dir)):
        problem = validate_checkpoint(path)
        if problem is None:
            return path
        log(f"skipping {path}: {problem}")
    return None


class Checkpointer:
    """Saves and restores one run's checkpoints.

    ``models`` maps a role name ("policy", "value", "model") to the trainable module whose
    weights are saved with save_pretrained."""

    def __init__(self, output_dir: str | Path, accelerator, models: dict[str, Any], optimizer, scheduler,
                 save_total_limit: int = 2):
        self.root = Path(output_dir) / CHECKPOINT_DIR
        self.accelerator, self.models = accelerator, models
        self.optimizer, self.scheduler = optimizer, scheduler
        self.save_total_limit = save_total_limit

    def save(self, step: int, state: dict[str, Any]) -> Path:
        acc = self.accelerator
        final = self.root / f"{PREFIX}{step}"
        tmp = self.root / f".tmp-{PREFIX}{step}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        rng_tensors, rng_plain = capture_rng_state()  # every process has its own streams
        save_file(rng_tensors, str(tmp / f"rng_rank{acc.process_index}.safetensors"))
        _write_json(tmp / f"rng_rank{acc.process_index}.json", rng_plain)
        if is_fsdp2(acc):  # every process writes its shard of the weights and of the optimizer state
            self._save_shard(tmp)
        acc.wait_for_everyone()
        if acc.is_main_process:
            if not is_fsdp2(acc):
                self._save_weights_and_optimizer(tmp)
            _write_json(tmp / "scheduler.json", self.scheduler.state_dict())
            _write_json(tmp / STATE_FILE, {"step": step, "num_processes": acc.num_processes, **state})
            files = {str(f.relative_to(tmp)): {"size": f.stat().st_size, "sha256": _sha256(f)}
                     for f in sorted(tmp.rglob("*")) if f.is_file()}
            _write_json(tmp / MANIFEST, {"step": step, "files": files})
            fsync_tree(tmp)
            if final.exists():  # a rerun of the same step: replace it
                shutil.rmtree(final)
            tmp.rename(final)
            fsync_dir(self.root)
            self._prune()
        acc.wait_for_everyone()
        return final

    def _save_weights_and_optimizer(self, tmp: Path) -> None:
        """Main process, replicated weights (one process, DDP): each role's weights and the optimizer."""
        for role, model in self.models.items():
            # safetensors' save_model handles tied weights (GPT-2's lm_head = embeddings)
            save_model(self.accelerator.unwrap_model(model), str(tmp / f"{role}.safetensors"))
        tensors, meta = optimizer_state_to_files(self.optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        _write_json(tmp / "optimizer.json", meta)

    def _save_shard(self, tmp: Path) -> None:
        """Every process, FSDP2: its shard of the one trainable model and of the optimizer state."""
        (model,) = self.models.values()
        tensors, meta = shard_to_files(model, self.optimizer)
        save_file(tensors, str(tmp / SHARD_FILE.format(rank=self.accelerator.process_index)))
        _write_json(tmp / SHARD_META.format(rank=self.accelerator.process_index), meta)

    def _load_shard(self, path: Path) -> None:
        (model,) = self.models.values()
        rank = self.accelerator.process_index
        shard = path / SHARD_FILE.format(rank=rank)
        meta = json.loads((path / SHARD_META.format(rank=rank)).read_text(encoding="utf-8"))
        shard_from_files(model, self.optimizer, load_file(str(shard)), meta, str(shard))

    def _load_weights_and_optimizer(self, path: Path) -> None:
        for role, model in self.models.items():
            missing, unexpected = load_model(self.accelerator.unwrap_model(model), str(path / f"{role}.safetensors"),
                                             strict=False)
            if missing or unexpected:
                raise ConfigError(f"{path / role}.safetensors does not match the model "
                                  f"(missing {missing[:5]}, unexpected {unexpected[:5]}): resume with the options "
                                  "the checkpoint was written with")
        meta = json.loads((path / "optimizer.json").read_text(encoding="utf-8"))
        self.optimizer.load_state_dict(optimizer_state_from_files(load_file(str(path / "optimizer.safetensors")), meta))

    def _prune(self) -> None:
        if self.save_total_limit <= 0:
            return
        for old in list_checkpoints(self.root.parent)[: -self.save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)

    def load(self, path: Path) -> dict[str, Any]:
        """Restore weights, optimizer, scheduler and this process's RNG; return the trainer state."""
        acc = self.accelerator
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        if state["num_processes"] != acc.num_processes:
            raise ConfigError(f"{path} was written by {state['num_processes']} processes; resume with the same number "
                              f"(got {acc.num_processes}) so data order and random streams continue exactly")
        written_sharded = (path / SHARD_FILE.format(rank=0)).is_file()
        if written_sharded != is_fsdp2(acc):
            raise ConfigError(f"{path} was written {'with' if written_sharded else 'without'} FSDP: resume with the "
                              "accelerate config (launcher) it was written with")
        if is_fsdp2(acc):
            self._load_shard(path)
        else:
            self._load_weights_and_optimizer(path)
        self.scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text(encoding="utf-8")))
        rank = acc.process_index
        restore_rng_state(load_file(str(path / f"rng_rank{rank}.safetensors")),
                          json.loads((path / f"rng_rank{rank}.json").read_text(encoding="utf-8")))
        return state
