"""``rlhf label generate``: K responses per prompt for people to rank (InstructGPT section 3.5:
labelers rank K = 4..9 outputs of the current models).

The K responses of a prompt are drawn at several temperatures (response j at
``temperatures[j % len(temperatures)]``) so a ranking holds both careful and adventurous
answers. Two responses that are the same text once whitespace is stripped make a pair a labeler
cannot tell apart and a reward model learns nothing from: such a duplicate, or an empty
response, is dropped and redrawn at its temperature, up to ``max_resample_rounds`` times; a
prompt still short of K then keeps the distinct responses it has (at least ``min_responses``)
or is left out. Every drop, redraw and short prompt is counted in the summary.

Output, one JSON line per prompt (what ``rlhf label init --candidates`` reads)::

    {"prompt": str, "responses": [str, ...], "temperatures": [float, ...], "ended": [bool, ...],
     ...the prompt record's other fields}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from rlhf.atomic_io import write_jsonl
from rlhf.config.base import ConfigError
from rlhf.config.candidates import CandidatesConfig
from rlhf.progress import phase_bar
from rlhf.rollout.generation import SamplingParams, sample_responses

CONFIG_CLASS = CandidatesConfig


def slot_temperatures(k: int, temperatures: Sequence[float]) -> list[float]:
    """The temperature of each of the K response slots: spread round-robin, so K = 4 over
    (0.7, 1.0, 1.3) gives 0.7, 1.0, 1.3, 0.7."""
    return [temperatures[j % len(temperatures)] for j in range(k)]


@dataclass
class CandidateSet:
    """The distinct responses kept so far for one prompt, with the temperature and end-of-text
    flag of each; ``seen`` holds their stripped texts."""

    prompt: str
    fields: dict
    responses: list[str] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    ended: list[bool] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def offer(self, text: str, temperature: float, ended: bool) -> str:
        """Keep ``text`` if it is non-empty and differs (after strip) from every kept response.
        Returns "kept", "duplicate" or "empty"."""
        key = text.strip()
        if not key:
            return "empty"
        if key in self.seen:
            return "duplicate"
        self.seen.add(key)
        self.responses.append(text)
        self.temperatures.append(temperature)
        self.ended.append(bool(ended))
        return "kept"

    def record(self) -> dict:
        return {**self.fields, "prompt": self.prompt, "responses": self.responses,
                "temperatures": self.temperatures, "ended": self.ended}


def fill_candidates(sets: list[CandidateSet], k: int, temperatures: Sequence[float], sample, max_resample_rounds: int,
                    progress: str = "", batch_size: int = 64) -> dict[str, int]:
    """Fill each set up to ``k`` distinct responses. ``sample(prompts, temperature)`` returns
    ``(texts, ended)``, one response per prompt, for at most ``batch_size`` prompts. Round 0
    draws every slot; each later round redraws only the slots whose response was dropped.
    Returns the counts for the summary."""
    wanted = slot_temperatures(k, temperatures)
    # pending[i]: the temperatures of set i's slots still to draw, in slot order
    pending = {i: list(wanted) for i in range(len(sets))}
    counts = {"sampled": 0, "duplicates_dropped": 0, "empty_dropped": 0, "resampled": 0}
    for round_ in range(max_resample_rounds + 1):
        jobs = [(i, t) for i, temps in pending.items() for t in temps]
        if not jobs:
            break
        if round_:
            counts["resampled"] += len(jobs)
        pending = {}
        by_temperature: dict[float, list[int]] = {}
        for i, t in jobs:
            by_temperature.setdefault(t, []).append(i)
        batches = [(t, by_temperature[t][start:start + batch_size]) for t in sorted(by_temperature)
                   for start in range(0, len(by_temperature[t]), batch_size)]
        description = f"{progress} round {round_}" if progress and round_ else progress
        for t, indices in phase_bar(batches, description, f"{len(jobs)} responses"):
            texts, ended = sample([sets[i].prompt for i in indices], t)
            counts["sampled"] += len(texts)
            for i, text, end in zip(indices, texts, ended):
                outcome = sets[i].offer(text, t, end)
                if outcome != "kept":
                    counts["duplicates_dropped" if outcome == "duplicate" else "empty_dropped"] += 1
                    pending.setdefault(i, []).append(t)
    return counts


def run(config: CandidatesConfig) -> dict:
    from rlhf.data import load_prompts
    from rlhf.models.loading import load_causal_lm, load_tokenizer, position_limit

    out = Path(config.output_file)
    if out.exists() and not config.overwrite_output_dir:
        raise ConfigError(f"output_file {out} exists: pass --overwrite_output_dir true to replace it, or choose "
                          "another --output_file")
    tokenizer = load_tokenizer(config.model_name_or_path, trust_remote_code=config.trust_remote_code,
                               padding_side="left")
    prompts = load_prompts(config.prompts_file, tokenizer=tokenizer, prompt_field=config.prompt_field)
    if config.max_prompts:
        prompts = prompts[: config.max_prompts]
    model = load_causal_lm(config.model_name_or_path, tokenizer, trust_remote_code=config.trust_remote_code).eval()
    torch.manual_seed(config.seed)  # sampling draws from torch's global RNG: same seed, same candidates

    limit = position_limit(model.config)
    sets, too_long = [], 0
    for record in prompts:
        if limit and len(tokenizer(record.prompt, add_special_tokens=False)["input_ids"]) + config.max_new_tokens > limit:
            too_long += 1  # prompt + response would not fit the model's positions
            continue
        sets.append(CandidateSet(record.prompt, dict(record.fields)))

    def sample(texts: list[str], temperature: float) -> tuple[list[str], list[bool]]:
        params = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=temperature, top_p=config.top_p)
        return sample_responses(model, tokenizer, texts, params, batch_size=config.batch_size)

    counts = fill_candidates(sets, config.num_responses, config.temperature_list(), sample,
                             config.max_resample_rounds, progress="" if config.disable_tqdm else "label generate",
                             batch_size=config.batch_size)
    kept = [s for s in sets if len(s.responses) >= config.min_responses]
    write_jsonl(out, [s.record() for s in kept])
    summary = {"prompts": len(prompts), "prompts_written": len(kept), "prompts_too_long": too_long,
               "prompts_with_fewer_than_k": sum(1 for s in kept if len(s.responses) < config.num_responses),
               "prompts_dropped_too_few_distinct": len(sets) - len(kept),
               "responses_written": sum(len(s.responses) for s in kept), **counts, "output_file": str(out)}
    print(json.dumps(summary, indent=2))
    return summary
