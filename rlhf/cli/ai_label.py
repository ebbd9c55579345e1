"""``rlhf ai label``: a judge ranks each prompt's candidate responses (RLAIF, Lee et al. 2023).

Each record's K responses are compared pairwise, each pair in both orders under a principle
drawn from the constitution, and ranked by Copeland's count of wins (rlhf.feedback.judges).
The rankings file is the package's (``{"prompt", "responses", "ranking", "labeler"}``), so
``rlhf rm``, ``rlhf dpo`` and the pipeline read it unchanged. Answers go to a cache as they come,
so a killed run started again asks only what was left; records where every pair was
position-biased or unreadable are left out and counted in the summary.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from rlhf.atomic_io import write_json_atomic, write_jsonl
from rlhf.config.ai_feedback import AILabelConfig
from rlhf.config.base import ConfigError
from rlhf.data.errors import DataError
from rlhf.data.records import read_records

CONFIG_CLASS = AILabelConfig


def load_candidates(path: str | Path) -> list[dict]:
    """``{"prompt", "responses": [...]}`` records (extra fields kept); a bad one is a DataError
    naming the file, line and field."""
    records = []
    for raw, source in read_records(path):
        prompt, responses = raw.get("prompt"), raw.get("responses")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(source.path, source.line, "prompt", "expected a non-empty string")
        if not isinstance(responses, list) or len(responses) < 2 or not all(isinstance(r, str) for r in responses):
            raise DataError(source.path, source.line, "responses", "expected a list of at least 2 strings")
        if len(set(responses)) != len(responses):
            raise DataError(source.path, source.line, "responses", "two responses are identical")
        records.append(raw)
    return records


def default_cache_file(output_file: str | Path) -> Path:
    out = Path(output_file)
    return out.with_name(out.stem + ".judge_cache.jsonl")


def run(config: AILabelConfig) -> dict:
    from rlhf.cli.ai import make_judge
    from rlhf.progress import phase_bar

    out = Path(config.output_file)
    if out.exists() and not config.overwrite_output_dir:
        raise ConfigError(f"output_file {out} exists: pass --overwrite_output_dir true to replace it, or choose another "
                          "--output_file (a killed run left no output_file: run the same command again to resume)")
    records = load_candidates(config.candidates)
    cache_file = Path(config.cache_file) if config.cache_file else default_cache_file(out)
    judge = make_judge(config, cache_file)
    start = time.time()
    if hasattr(judge, "judge"):
        ranked, summary = _judge_records(config, judge, records, phase_bar)
    else:
        ranked, summary = _label_records(config, judge, records)
    write_jsonl(out, ranked)
    summary.update(candidates=len(records), written=len(ranked), output_file=str(out),
                   wall_time_s=round(time.time() - start, 1))
    write_json_atomic(out.with_name(out.stem + ".summary.json"), summary)
    print(f"rlhf ai label: {len(ranked)} of {len(records)} rankings by {summary['labeler']} -> {out}")
    for key in ("position_bias", "unreadable", "dropped_records", "cache_hits", "judge_calls"):
        if key in summary:
            print(f"  {key}: {summary[key]}")
    if records and not ranked:
        print("rlhf ai label: warning: the judge gave no labels (every pair flipped with the order or was "
              "unreadable); a better judge, or --keep_position_flips true, gives some", file=sys.stderr)
    return summary


def _judge_records(config: AILabelConfig, judge, records: list[dict], phase_bar) -> tuple[list[dict], dict]:
    """Rank with an AI judge, a chunk of records per step (and per cache write)."""
    from rlhf.feedback.constitution import load_constitution
    from rlhf.feedback.judges import JudgeStats, judge_rankings

    constitution = load_constitution(config.constitution or None)
    stats = JudgeStats()
    chunks = range(0, len(records), config.chunk_size)
    ranked = []
    bar = phase_bar(chunks, "" if config.disable_tqdm else "rlhf ai label", f"{len(records)} prompts")
    for first in bar:
        ranked += judge_rankings(judge, constitution, records[first:first + config.chunk_size], config.seed,
                                 stats, config.keep_position_flips, first_index=first)
    summary = {"labeler": f"ai:{judge.name}", "constitution": constitution.name, **stats.summary(),
               "cache_hits": getattr(judge, "hits", 0), "judge_calls": getattr(judge, "misses", 0),
               "truncated_prompts": getattr(getattr(judge, "inner", judge), "truncated", 0)}
    return ranked, summary


def _label_records(config: AILabelConfig, labeler, records: list[dict]) -> tuple[list[dict], dict]:
    """Rank with gold or the simulated people (the embedded task's labelers)."""
    from rlhf.feedback.labeler import ranking_record

    ranked = []
    for n, record in enumerate(records):
        rng = random.Random(f"ai-label-{config.seed}-{n}")
        who = labeler.labeler_for(record, rng) if hasattr(labeler, "labeler_for") else labeler
        ended = record.get("ended") if isinstance(record.get("ended"), list) else None
        ranked.append(ranking_record(who, record["prompt"], record["responses"], rng, ended=ended))
    return ranked, {"labeler": labeler.name}
