"""``rlhf ai revise``: Constitutional AI's supervised stage (Bai et al. 2022, sec. 3).

For each prompt: the policy's response; a critique of it under a principle drawn from the
constitution (seeded); a revision that answers the critique. The critic and reviser is the
judge model (a local folder or an HTTP endpoint), shown the conversation exactly as in the
paper: the request, the response, the critique request, the critique, the revision request.
Writes, in the package's formats:

- ``demonstrations.jsonl``: ``{"prompt", "completion": revision}`` (for ``rlhf sft``);
- ``comparisons.jsonl``: ``{"prompt", "chosen": revision, "rejected": first response}`` (for
  ``rlhf rm``/``rlhf dpo``), left out where the revision is empty or unchanged;
- ``critiques.jsonl``: every step's text and the principle, to read what happened.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from rlhf.atomic_io import write_json_atomic, write_jsonl
from rlhf.config.ai_feedback import AIReviseConfig
from rlhf.config.base import ConfigError, save_config

CONFIG_CLASS = AIReviseConfig


def critique_messages(request: str, response: str, critique_request: str) -> list[dict[str, str]]:
    """The critic's conversation: the request, the response as the assistant's turn, then the
    principle's critique request."""
    return [{"role": "user", "content": request}, {"role": "assistant", "content": response.strip()},
            {"role": "user", "content": critique_request}]


def revision_messages(request: str, response: str, critique_request: str, critique: str,
                      revision_request: str) -> list[dict[str, str]]:
    """The reviser's conversation: the critic's, its critique, and the revision request (asking
    for the rewritten answer alone, so the reply can be used as a demonstration)."""
    return critique_messages(request, response, critique_request) + [
        {"role": "assistant", "content": critique.strip()},
        {"role": "user", "content": f"{revision_request} Reply with the rewritten answer only."}]


def run(config: AIReviseConfig) -> dict:
    from rlhf.cli.ai import make_judge
    from rlhf.data import load_prompts
    from rlhf.feedback.constitution import load_constitution
    from rlhf.feedback.judges import conversation_text
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.rollout.generation import SamplingParams, sample_responses

    root = Path(config.output_dir)
    if (root / "demonstrations.jsonl").exists() and not config.overwrite_output_dir:
        raise ConfigError(f"output_dir {root} already holds a revision run: pass --overwrite_output_dir true or "
                          "choose another --output_dir")
    save_config(config, root)
    constitution = load_constitution(config.constitution or None)
    tokenizer = load_tokenizer(config.model_name_or_path, padding_side="left")
    prompts = [p.prompt for p in load_prompts(config.prompts_file, tokenizer=tokenizer, prompt_field=config.prompt_field)]
    if config.max_prompts:
        prompts = prompts[: config.max_prompts]
    # 1. The policy's first responses.
    policy = load_causal_lm(config.model_name_or_path, tokenizer).eval()
    torch.manual_seed(config.seed)
    sampling = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature or 1.0,
                              do_sample=config.temperature > 0)
    responses, _ = sample_responses(policy, tokenizer, prompts, sampling)
    del policy
    # 2. A critique under a drawn principle, 3. a revision answering it.
    judge = make_judge(config, root / "judge_cache.jsonl")
    rng = random.Random(f"ai-revise-{config.seed}")
    principles = [constitution.draw(rng) for _ in prompts]
    requests = [conversation_text(p) for p in prompts]
    critiques = judge.generate([critique_messages(q, r, p.critique_request)
                                for q, r, p in zip(requests, responses, principles)], config.critique_max_new_tokens)
    revisions = judge.generate([revision_messages(q, r, p.critique_request, c, p.revision_request)
                                for q, r, p, c in zip(requests, responses, principles, critiques)],
                               config.revision_max_new_tokens)
    demonstrations, comparisons, steps = [], [], []
    for prompt, response, principle, critique, revision in zip(prompts, responses, principles, critiques, revisions):
        lead = " " if response.startswith(" ") or prompt.endswith(":") else ""
        revised = lead + revision.strip()
        steps.append({"prompt": prompt, "response": response, "principle": principle.name, "critique": critique,
                      "revision": revised})
        if not revision.strip():
            continue
        demonstrations.append({"prompt": prompt, "completion": revised})
        if revised.strip() != response.strip():
            comparisons.append({"prompt": prompt, "chosen": revised, "rejected": response,
                                "labeler": f"ai:{judge.name}:revision"})
    write_jsonl(root / "critiques.jsonl", steps)
    write_jsonl(root / "comparisons.jsonl", comparisons)
    write_jsonl(root / "demonstrations.jsonl", demonstrations)
    summary = {"prompts": len(prompts), "demonstrations": len(demonstrations), "comparisons": len(comparisons),
               "judge": judge.name, "constitution": constitution.name}
    write_json_atomic(root / "summary.json", summary)
    print(f"rlhf ai revise: {len(demonstrations)} demonstrations, {len(comparisons)} comparisons -> {root}")
    return summary
