"""`--torch_compile true`: PPO's policy-and-value forward (and so its backward) through
torch.compile's inductor backend.

Why only that module: it is where PPO spends its update (ppo_epochs x minibatches forward +
backward passes), and compiling the module in place (``nn.Module.compile``) keeps its
parameters, state_dict keys and the optimizer's view of them unchanged, so checkpoints are
written and loaded as in eager mode. (Two fresh compiled runs are not yet bit-identical: see
docs/ppo.md.) Generation (``policy.generate``) and the reference and
reward forwards stay eager: they are separate modules, called once per rollout.

Rollouts vary in length (prompts are padded to the batch's longest, responses end early), so
the module is compiled with ``dynamic=True``: one graph for every (batch, length) instead of a
recompilation per shape. ``compile_counters()`` reads dynamo's counters so a run (or the bench)
can report how many graphs were compiled (a recompilation adds a graph).

Inductor on CPU writes and builds C++ kernels: it needs a C++ compiler on the PATH
(``CXX`` or ``g++``); without one the option fails before any model loads, with a message
saying so, instead of deep inside the first training step.
"""

from __future__ import annotations

import os
import shutil

import torch
from torch import nn

from rlhf.config.base import ConfigError


def check_compiler() -> None:
    """Inductor builds C++ (CPU kernels, and the host code around GPU kernels) at run time: fail
    early and clearly without a compiler."""
    cxx = os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise ConfigError(f"torch_compile needs a C++ compiler ({cxx!r} not found on PATH): install g++ "
                          "(apt-get install g++) or set CXX, or run with --torch_compile false")


def compile_module(module: nn.Module, mode: str = "default") -> nn.Module:
    """Compile ``module``'s forward in place with inductor and dynamic shapes; returns the module."""
    check_compiler()
    module.compile(backend="inductor", mode=None if mode == "default" else mode, dynamic=True)
    return module


def compile_counters() -> dict[str, int]:
    """Dynamo's counters since the last reset: graphs compiled (a recompilation for a new shape
    or mode adds one) and frames converted; for the run's summary and the bench."""
    from torch._dynamo.utils import counters

    return {"compile/graphs": int(counters["stats"].get("unique_graphs", 0)),
            "compile/frames": int(counters["frames"].get("ok", 0))}


def reset_counters() -> None:
    """Start counting afresh (tests and the bench measure one run at a time)."""
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
