"""Instruments one training process the same way for either library, from outside its code.

- Step clock: the worker calls ``train_started()`` once and ``step_ended()`` after every update
  (ours: RunLogger hooks; TRL: a TrainerCallback). Seconds per update are the differences.
- Work counters, reset every update: each forward of a GPT-2 backbone (GPT2Model.forward, which
  every role of both libraries goes through), split into forward-with-grad, forward-without-grad
  and generation decode steps, with (rows, width, non-padding tokens); optimizer steps (a global
  torch.optim post-hook); seconds inside ``generate``.
- Memory: peak RSS (VmHWM) of the process during training, after resetting the high-water mark
  at train start (/proc/self/clear_refs "5"), plus ru_maxrss over the whole process life.

Imports only torch and the standard library (both venvs have them); transformers is patched
after import, at class level, so it works whatever the trainer builds later.
"""

from __future__ import annotations

import functools
import json
import os
import re
import resource
import time


def configure_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", open("/proc/self/status").read(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Probe:
    def __init__(self):
        self.t_start: float | None = None
        self.marks: list[float] = []
        self.updates: list[dict] = []
        self.rss_at_train_start_kib = None
        self.peak_reset = False
        self._new_counters()

    def _new_counters(self) -> None:
        self.current = {"fwd_grad": [], "fwd_nograd": [], "decode_calls": 0, "decode_tokens": 0,
                        "optimizer_steps": 0, "generate_s": 0.0}

    # --- installation ----------------------------------------------------------------------------
    def install(self) -> "Probe":
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook
        from transformers.generation.utils import GenerationMixin
        from transformers.models.gpt2.modeling_gpt2 import GPT2Model

        probe = self
        original_forward = GPT2Model.forward

        @functools.wraps(original_forward)
        def forward(module, *args, **kwargs):
            probe._record_forward(args, kwargs, torch.is_grad_enabled())
            return original_forward(module, *args, **kwargs)

        GPT2Model.forward = forward
        original_generate = GenerationMixin.generate

        @functools.wraps(original_generate)
        def generate(model, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original_generate(model, *args, **kwargs)
            finally:
                probe.current["generate_s"] += time.perf_counter() - t0

        GenerationMixin.generate = generate
        register_optimizer_step_post_hook(lambda optimizer, args, kwargs: probe._count_step())
        return self

    def _count_step(self) -> None:
        self.current["optimizer_steps"] += 1

    def _record_forward(self, args, kwargs, grad: bool) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            embeds = kwargs.get("inputs_embeds")
            if embeds is None:
                return
            shape = tuple(embeds.shape[:2])
        else:
            shape = tuple(ids.shape)
        past = kwargs.get("past_key_values")
        past_len = 0
        if past is not None and hasattr(past, "get_seq_length"):
            past_len = int(past.get_seq_length())
        if past_len > 0:  # a generation decode step: one new token per row against the cache
            self.current["decode_calls"] += 1
            self.current["decode_tokens"] += shape[0] * shape[1]
            return
        mask = kwargs.get("attention_mask")
        # The mask itself is kept and summed when the update ends: int(mask.sum()) here would force
        # a graph break inside a torch.compile'd forward (the `compile` option), which would then
        # be timed in another shape than users run it.
        real = mask if mask is not None and hasattr(mask, "sum") and mask.dim() == 2 else shape[0] * shape[1]
        self.current["fwd_grad" if grad else "fwd_nograd"].append([shape[0], shape[1], real])

    # --- the step clock --------------------------------------------------------------------------
    def train_started(self) -> None:
        self.rss_at_train_start_kib = _status_kib("VmRSS")
        self.peak_reset = _reset_peak_rss()
        self._new_counters()
        self.t_start = time.perf_counter()
        self.marks = [self.t_start]

    def step_ended(self) -> None:
        now = time.perf_counter()
        if self.t_start is None:  # no train-start hook fired: time from the first step's end
            self.t_start = now
            self.marks = [now]
            self._new_counters()
            return
        for kind in ("fwd_grad", "fwd_nograd"):
            self.current[kind] = [[int(b), int(t), int(real.sum()) if hasattr(real, "sum") else int(real)]
                                  for b, t, real in self.current[kind]]
        self.updates.append({"seconds": now - self.marks[-1], **self.current})
        self.marks.append(now)
        self._new_counters()

    # --- results ---------------------------------------------------------------------------------
    def result(self) -> dict:
        import torch

        return {
            "updates": self.updates,
            "peak_rss_train_kib": _status_kib("VmHWM") if self.peak_reset else None,
            "rss_at_train_start_kib": self.rss_at_train_start_kib,
            "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
        }


def write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(tmp, path)
