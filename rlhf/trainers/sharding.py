"""Fully sharded training (FSDP2) through accelerate, and the few places where it changes a loop.

Under FSDP2 each process holds 1/N of every trainable parameter, gradient and optimizer state
(``torch.distributed.fsdp.fully_shard``); a forward pass all-gathers a layer's weights just
before using it and frees them after. Four things follow for our loops:

- Every process must run the same sequence of collective forward passes. Held-out evaluation
  and PPO's rollout run on a different number of batches per process, and they call
  sub-modules (``model.policy.generate``), which FSDP's hooks do not see. They run inside
  ``gathered(accelerator)``: the full weights are all-gathered once, the forward passes that
  follow communicate nothing, and the shards are restored at the end (TRL does the same for
  ZeRO-3 generation, ``ds3_gather_for_generation``). Inside, a process holds the whole trainable
  model, as in DDP; outside, 1/N of it.
- The saved model is the full state dict, gathered shard by shard (``full_weights_for_saving``).
- Checkpoints hold each process's shard of the weights and of the optimizer state
  (``shard_rank<r>.safetensors``), read back by the same number of processes. We do not use
  ``accelerator.save_state``: under FSDP2 it writes torch.distributed.checkpoint files and
  ``torch.save`` RNG states, both pickle (see checkpoint.py).
- The frozen roles (the reference, the reward model) are not prepared: each process holds a full
  copy in inference mode (docs/distributed.md says why).

On a machine without a GPU accelerate never enables FSDP (its FSDP path starts only for GPU-like
devices), even under ``accelerate launch --config_file examples/accelerate/fsdp2.yaml``;
``enable_fsdp_on_cpu`` turns it on from the same environment variables, so the CPU tests run the
code path a GPU run takes.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

import torch

from rlhf.config.base import ConfigError

SHARD_FILE = "shard_rank{rank}.safetensors"
SHARD_META = "shard_rank{rank}.json"


def fsdp_requested() -> bool:
    """True when the launcher asked for FSDP (``accelerate launch`` with an FSDP config file sets it)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_fsdp_on_cpu(accelerator, config=None) -> None:
    """Turn on FSDP2 for CPU processes over gloo when the launcher asked for FSDP. accelerate
    enables it only on GPU-like devices and would silently fall back to DDP (each process with a
    full copy) on the CPU. Refuses what we do not support under FSDP: version 1, and LoRA."""
    from accelerate import FullyShardedDataParallelPlugin, PartialState
    from accelerate.utils import DistributedType

    if not fsdp_requested():
        return
    if config is not None and getattr(config, "use_peft", False):
        raise ConfigError("use_peft: LoRA is not supported with FSDP here (merging adapters into sharded weights is "
                          "untested): drop --use_peft or launch without the FSDP config (DDP)")
    if os.environ.get("FSDP_VERSION", "1") != "2":
        raise ConfigError(f"fsdp_version: {os.environ.get('FSDP_VERSION', '1')} in the accelerate config; only "
                          "fsdp_version: 2 is supported (examples/accelerate/fsdp2.yaml)")
    if accelerator.distributed_type == DistributedType.MULTI_CPU:
        # Both shared states: a later AcceleratorState() copies PartialState's over its own.
        PartialState().distributed_type = DistributedType.FSDP
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # read from the FSDP_* variables


def is_fsdp2(accelerator) -> bool:
    return bool(getattr(accelerator, "is_fsdp2", False))


def prepare_trainable(accelerator, model, optimizer):
    """``accelerator.prepare(model, optimizer)``. Under FSDP2 a wrapper of ours (PPO's policy and
    value, the reward model's scalar head) takes its inner models' ``_no_split_modules``, so
    accelerate's TRANSFORMER_BASED_WRAP shards each transformer block on its own (one gather per
    block) rather than the whole model as one unit."""
    if is_fsdp2(accelerator) and not getattr(model, "_no_split_modules", None):
        names = {name for module in model.modules() for name in (getattr(module, "_no_split_modules", None) or [])}
        if names:
            model._no_split_modules = sorted(names)
    return accelerator.prepare(model, optimizer)


def _fsdp_units(accelerator) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for model in getattr(accelerator, "_models", []) for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(accelerator) -> Iterator[None]:
    """Inside, every FSDP2-sharded model that ``accelerator`` prepared holds its full weights on
    every process, and forward passes (and ``generate``) communicate nothing, so processes may run
    different numbers of them. Only for inference: writes to the weights inside are lost when the
    shards are restored, and ``state_dict()`` inside returns shards. A no-op without FSDP2. Every
    process must enter it. It uses three private names of torch's FSDP2 (the root's ``_lazy_init``,
    a unit's ``_reshard_after_forward``, ``_is_fsdp_managed_module``); tests/test_fsdp.py fails if
    a torch upgrade moves them."""
    units = _fsdp_units(accelerator) if is_fsdp2(accelerator) else []
    if not units:
        yield
        return
    roots = [model for model in accelerator._models if model in units]
    for root in roots:  # FSDP wants its root initialised first; a sub-module's forward would claim it
        root._get_fsdp_state()._lazy_init()
    # transformers' generate sees FSDP-managed modules and syncs every token step across processes
    # (synced_gpus); with the weights gathered there is nothing to sync, and eval batches may differ.
    managed = [m for model in accelerator._models for m in model.modules()
               if getattr(m, "_is_fsdp_managed_module", False)]
    resharding = []
    for unit in units:
        unit.unshard()
        group = getattr(unit._get_fsdp_state(), "_fsdp_param_group", None)
        resharding.append(getattr(group, "_reshard_after_forward", True))
        unit.set_reshard_after_forward(False, recurse=False)
    for module in managed:
        module._is_fsdp_managed_module = False
    try:
        yield
    finally:
        for module in managed:
            module._is_fsdp_managed_module = True
        for unit, reshard in zip(units, resharding):
            unit.reshard()
            unit.set_reshard_after_forward(reshard, recurse=False)


def full_weights_for_saving(model, accelerator) -> tuple[Any, dict[str, torch.Tensor] | None]:
    """The object whose ``save_pretrained`` writes ``model`` and, under FSDP2, its full weights
    (each shard all-gathered in turn, kept on the main process, in CPU memory); None otherwise.
    Every process must call it. ``save_pretrained`` alone would read the sharded weights: FSDP2
    turns ``state_dict()`` into shards even inside ``gathered``. A wrapper with an inner
    transformers model (our ScalarModel) is saved through that model, as its own save_pretrained does."""
    from torch.distributed.tensor import DTensor
    from transformers import PreTrainedModel

    if accelerator is None or not is_fsdp2(accelerator):
        return model, None
    if not isinstance(model, PreTrainedModel) and isinstance(getattr(model, "hf_model", None), PreTrainedModel):
        model = model.hf_model
    full: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        value = value.full_tensor() if isinstance(value, DTensor) else value  # collective: every process
        if accelerator.is_main_process:
            full[name] = value.detach().cpu()
    # Tied weights (GPT-2's lm_head = embeddings) become one tensor again, which save_pretrained
    # recognises and writes once, as without FSDP.
    for tied, source in (getattr(model, "all_tied_weights_keys", None) or {}).items():
        if tied in full and source in full:
            full[tied] = full[source]
    return model, full


# ---- sharded checkpoints: each process's shard of the weights and the optimizer state ---------

def _local(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.detach().cpu().contiguous().clone()


def shard_to_files(model, optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's shard of the weights (``model/<name>``) and of the optimizer state
    (``optim/<name>/<state>``, keyed by parameter name, not position), and the plain values
    (param groups, tied names) for JSON."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}  # a name whose tensor is another's (GPT-2's lm_head = embeddings)
    owner: dict[int, str] = {}
    for name, value in get_model_state_dict(model).items():
        local = value.to_local() if hasattr(value, "to_local") else value
        key = (local.data_ptr(), local.shape, local.stride()) if local.numel() else None
        if key is not None and key in owner:
            tied[name] = owner[key]
            continue
        if key is not None:
            owner[key] = name
        tensors[f"model/{name}"] = _local(value)
    optim = get_optimizer_state_dict(model, optimizer)
    plain: dict[str, Any] = {}
    for name, state in optim["state"].items():
        for field, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{name}/{field}"] = _local(value)
            else:
                plain[f"{name}/{field}"] = value
    return tensors, {"tied": tied, "plain": plain, "param_groups": optim["param_groups"]}


def shard_from_files(model, optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str) -> None:
    """Put this process's saved shard back into the sharded model and optimizer (written by
    ``shard_to_files`` with as many processes)."""
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)
    from torch.distributed.tensor import DTensor

    like = get_model_state_dict(model)

    def rebuild(name: str, saved: torch.Tensor) -> torch.Tensor:
        target = like[name]
        if not isinstance(target, DTensor):
            return saved.to(target.device)
        if saved.shape != target.to_local().shape:
            raise ConfigError(f"{source}: {name} has shape {tuple(saved.shape)}, this process's shard "
                              f"{tuple(target.to_local().shape)}: resume with the options and the number of "
                              "processes the checkpoint was written with")
        return DTensor.from_local(saved.to(target.device), target.device_mesh, target.placements,
                                  shape=target.shape, stride=target.stride())

    missing = [n for n in like if f"model/{n}" not in tensors and n not in meta["tied"]]
    if missing:
        raise ConfigError(f"{source} does not match the model (missing {missing[:5]}): resume with the options "
                          "the checkpoint was written with")
    weights = {n: rebuild(n, tensors[f"model/{n}"]) for n in like if f"model/{n}" in tensors}
    set_model_state_dict(model, weights, options=_options(strict=False))
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            name, field = key[len("optim/"):].rsplit("/", 1)
            state.setdefault(name, {})[field] = rebuild(name, value) if value.dim() else value
    for key, value in meta["plain"].items():
        name, field = key.rsplit("/", 1)
        state.setdefault(name, {})[field] = value
    groups = get_optimizer_state_dict(model, optimizer)["param_groups"]
    for group, saved in zip(groups, meta["param_groups"]):
        group.update({k: v for k, v in saved.items() if k != "params"})
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups})


def _options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(**kwargs)
