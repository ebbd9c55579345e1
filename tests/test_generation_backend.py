"""The generation seam: PPO gets every rollout from a GenerationBackend and hands it the policy after
every update (rlhf/rollout/backends.py), so a faster engine plugs in without touching the trainers."""

import json
from pathlib import Path

import pytest
import torch

from rlhf.config.base import parse_config
from rlhf.config.ppo import PPOConfig
from rlhf.rollout.backends import GenerationBackend, TransformersBackend, as_backend
from rlhf.rollout.generation import Rollout, SamplingParams, generate, response_mask_from_ids

SCRIPT = " yes good"  # every response the scripted backend gives


class ScriptedBackend:
    """Answers every prompt with SCRIPT and end-of-text, and records what the trainer asked of it:
    ("generate", batch size, max_new_tokens) and ("update", checksum of the policy's weights)."""

    calls: list = []  # class-level, as the run builds its own instance
    tokens: list[int] = []  # SCRIPT's token ids and end-of-text, set by the test

    def __init__(self, model, eos_token_id: int, pad_token_id: int):
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id
        self.calls.append(("start", checksum(model)))

    def generate(self, prompt_ids, prompt_mask, params: SamplingParams, record_logprobs: bool = False) -> Rollout:
        self.calls.append(("generate", prompt_ids.shape[0], params.max_new_tokens))
        responses = torch.tensor([self.tokens] * prompt_ids.shape[0])  # (B, R)
        response_mask, ended = response_mask_from_ids(responses, self.eos_token_id)
        return Rollout(torch.cat([prompt_ids, responses], 1), torch.cat([prompt_mask.long(), response_mask], 1),
                       response_mask, ended, prompt_ids.shape[1], logprobs=None)  # no logprobs: PPO takes a forward

    def update_weights(self, model) -> None:
        self.calls.append(("update", checksum(model)))


def checksum(model) -> float:
    return sum(p.detach().double().sum().item() for p in model.parameters())


def test_ppo_samples_only_through_the_backend_and_hands_it_each_update(tiny_model_dir, toy_data, tmp_path,
                                                                       monkeypatch):
    import rlhf.trainers.online as online
    from transformers.generation.utils import GenerationMixin

    from rlhf.trainers import ppo

    from rlhf.models.loading import load_tokenizer

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    tokenizer = load_tokenizer(tiny_model_dir)
    monkeypatch.setattr(ScriptedBackend, "calls", [])
    monkeypatch.setattr(ScriptedBackend, "tokens",
                        tokenizer(SCRIPT, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
    monkeypatch.setattr(online, "TransformersBackend", ScriptedBackend)

    def no_generate(*args, **kwargs):
        raise AssertionError("the trainer called model.generate instead of its backend")

    monkeypatch.setattr(GenerationMixin, "generate", no_generate)
    config = parse_config(PPOConfig, [
        "--model_name_or_path", str(tiny_model_dir), "--reward_function", "reward_functions:target_char_rate",
        "--prompts_file", str(toy_data["prompts"]), "--output_dir", str(tmp_path), "--max_steps", "3",
        "--rollout_batch_size", "8", "--per_device_train_batch_size", "4", "--max_new_tokens", "7",
        "--learning_rate", "1e-2", "--sample_every", "1", "--num_samples_to_log", "8", "--disable_tqdm", "true",
        "--report_to", "none", "--value_model", "shared"])
    with pytest.warns(UserWarning, match="skipped SFT"):
        ppo.run(config)
    calls = ScriptedBackend.calls
    assert [c[0] for c in calls] == ["start"] + ["generate", "update"] * 3  # each rollout, then the hook
    assert all(c[1:] == (8, 7) for c in calls if c[0] == "generate")  # the run's batch and sampling params
    checksums = [c[1] for c in calls if c[0] in ("start", "update")]
    assert len(set(checksums)) == 4  # each hook saw weights no earlier hook saw: it runs after the update
    from transformers import AutoModelForCausalLM
    assert checksum(AutoModelForCausalLM.from_pretrained(tmp_path / "model")) == pytest.approx(checksums[-1], rel=1e-12)
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 24 and {s["response"] for s in samples} == {SCRIPT}  # what was scored is the backend's


def test_default_backend_is_transformers_generate(tiny_model_dir):
    from rlhf.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir, tokenizer)
    backend = as_backend(model, tokenizer)
    assert isinstance(backend, TransformersBackend) and isinstance(backend, GenerationBackend)
    assert as_backend(backend, tokenizer) is backend  # a backend is used as it is
    batch = tokenizer(["what is one plus two?", "the cat"], return_tensors="pt", padding=True)
    params = SamplingParams(max_new_tokens=5)
    torch.manual_seed(3)
    ours = backend.generate(batch["input_ids"], batch["attention_mask"], params, record_logprobs=True)
    torch.manual_seed(3)
    direct = generate(model, batch["input_ids"], batch["attention_mask"], params, tokenizer.eos_token_id,
                      tokenizer.pad_token_id, record_logprobs=True)
    assert torch.equal(ours.query_responses, direct.query_responses)
    assert torch.equal(ours.logprobs, direct.logprobs)
