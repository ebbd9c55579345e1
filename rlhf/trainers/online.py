"""One online-RL run: what PPO and the critic-free methods (GRPO, RLOO) share.

The roles: the trainable policy (LoRA adapters optional), the frozen reference (the SFT
model) and the frozen reward (a model, an ensemble or a function). Every step an algorithm
calls ``sample_and_score`` (generate from the policy, decode, score with the reward,
reference log-probs) and then does what makes it that algorithm: PPO adds values,
KL-shaped rewards, GAE and its clipped update (ppo.py). Around the steps, ``OnlineRun``
holds the prompts, resume state, SIGINT/SIGTERM, periodic checkpoints, held-out
evaluation and the save/merge tail.

Inputs before models: the tokenizer, the prompts and the reward functions (each called once on
two prompts) are loaded and checked before any model, so a mistake in them shows in seconds.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from rlhf.atomic_io import write_text_atomic
from rlhf.data import (collate_prompts, describe_formats, load_prompts, main_format, prompt_truncation_message,
                       tokenize_prompts, warn_if_template_unused)
from rlhf.data.templates import FORMAT_NAMES
from rlhf.evaluation.policy_eval import evaluate_policy
from rlhf.models.loading import (enable_gradient_checkpointing, load_causal_lm, load_tokenizer, training_info,
                                 training_stage_of)
from rlhf.models.lora import AdapterFreeReference, add_lora
from rlhf.models.policy_value import disable_dropout
from rlhf.rewards.functions import RewardFunction, check_reward_function, load_function
from rlhf.rewards.scorers import POLICY_STAGES, FunctionScorer, RewardModelScorer
from rlhf.rollout.backends import GenerationBackend, TransformersBackend, as_backend
from rlhf.rollout.generation import Rollout, SamplingParams, decode_responses
from rlhf.rollout.logprobs import response_logprobs
from rlhf.rollout.prompts import PromptSampler
from rlhf.trainers.checkpoint import Checkpointer
from rlhf.trainers.monitors import MonitorWatcher
from rlhf.trainers.optim import NonFiniteGuard, make_optimizer, make_scheduler
from rlhf.trainers.resume import resolve_resume
from rlhf.trainers.run_logger import RunLogger
from rlhf.trainers.saving import finish_run, save_adapter_and_merge
from rlhf.trainers.setup import check_output_dir, make_accelerator, prepare_output_dir, seed_everything
from rlhf.trainers.sharding import gathered, prepare_trainable
from rlhf.trainers.signals import StopSignals, TrainingInterrupted


SAMPLES_FILE = "samples.jsonl"  # every sample_every steps: {step, prompt, response, score[, gold_score]}


@dataclass
class Samples:
    """Responses sampled from the policy and scored; (B, R) unless noted."""

    rollout: Rollout
    prompt_texts: list[str]  # decoded, as the policy saw them (special tokens stripped)
    response_texts: list[str]
    scores: torch.Tensor  # (B,) raw reward, after the missing-eos penalty
    ref_logprobs: torch.Tensor | None  # (B, R) log pi_ref of the sampled tokens, 0 on padding; None: no reference
    fields: list[dict] | None = None  # each prompt record's other fields (e.g. GSM8K's answer)
    gold_scores: list[float] | None = None  # filled by gold_scores() when a gold function is set
    reward_skipped: torch.Tensor | None = None  # (B,) bool, with skip_bad_rewards: reward skipped, no gradient

    @property
    def loss_mask(self) -> torch.Tensor:
        """(B, R) the response tokens that train: all of them but a skipped reward's (skip_bad_rewards)."""
        mask = self.rollout.response_mask
        if self.reward_skipped is None or not self.reward_skipped.any():
            return mask
        return mask * (~self.reward_skipped).to(mask.dtype)[:, None]


def load_prompt_records(config, path: str, tokenizer, skip_bad_records: bool = False):
    """The prompt records of ``path``, read with the run's prompt options (field, chat template)."""
    return load_prompts(path, tokenizer=tokenizer, skip_bad_records=skip_bad_records,
                        prompt_field=config.prompt_field, apply_chat_template=config.apply_chat_template)


def tokenize_prompt_records(config, records, tokenizer, path: str, warn: bool = True):
    """The prompts' token ids, each over max_prompt_length cut or left out as prompt_truncation
    says; the list counts them (``truncated``, ``skipped_too_long``) and a warning says so."""
    prompts = tokenize_prompts(records, tokenizer, max_prompt_length=config.max_prompt_length,
                               prompt_truncation=config.prompt_truncation)
    if warn and (prompts.truncated or prompts.skipped_too_long):
        warnings.warn(prompt_truncation_message(path, prompts.truncated + prompts.skipped_too_long, len(records),
                                                config.max_prompt_length, config.prompt_truncation), stacklevel=2)
    return prompts


def prompt_summary(records, prompts) -> dict[str, Any]:
    """What the run's summary says about its prompts: how many, their formats, and how many were
    cut or left out for being longer than max_prompt_length."""
    return {"prompts": len(prompts), "prompt_formats": describe_formats(records),
            "prompts_truncated": prompts.truncated, "prompts_skipped_too_long": prompts.skipped_too_long}


def reward_model_prompt_format(path: str) -> str | None:
    """The format of the prompts a reward model was trained on (``prompt_format`` in its
    rlhf_training.json), or None when it does not say."""
    return training_info(path).get("prompt_format")


def warn_on_format_mismatch(config, records, tokenizer) -> None:
    """Warn when the prompts skip the policy's chat template, and when a reward model learnt its
    comparisons in another format than these prompts are in: it is then asked about text unlike
    any it was trained on, and its scores mean little."""
    warn_if_template_unused(records, tokenizer, config.prompts_file)
    prompts_format = main_format(records)
    for path in filter(None, config.reward_model_path.split(",")):
        trained = reward_model_prompt_format(path)
        if trained and prompts_format and trained != prompts_format:
            warnings.warn(f"reward model {path} was trained on prompts in {FORMAT_NAMES.get(trained, trained)}, but "
                          f"the PPO prompts of {config.prompts_file} are in {describe_formats(records)}: it will "
                          "score text in a format it never saw. Give both stages the same format (see "
                          "--apply_chat_template)", stacklevel=2)


def load_reward_functions(config, records) -> tuple[RewardFunction | None, RewardFunction | None]:
    """The reward and gold functions named in the config, each checked on the first two prompts
    (a made-up response each) so that a wrong spec or return value shows before any model loads."""
    raw_prompts = [r.prompt if r.raw is None else r.raw for r in records[:2]]
    fields = [r.fields for r in records[:2]]
    functions = []
    for option in ("reward_function", "gold_reward_function"):
        spec = getattr(config, option)
        skip = option == "reward_function" and getattr(config, "skip_bad_rewards", False)
        function = load_function(spec, option, skip_errors=skip) if spec else None
        if function is not None:  # the gold function sees the prompts decoded, as in evaluation
            check_reward_function(function, raw_prompts if option == "reward_function" else
                                  [r.prompt for r in records[:2]], fields, config.prompts_file)
        functions.append(function)
    return functions[0], functions[1]


def check_reward_functions(config) -> None:
    """The start-up check of the reward and gold functions without a tokenizer, for a caller that
    has none yet (``rlhf pipeline`` before its SFT stage has written the policy)."""
    load_reward_functions(config, load_prompt_records(config, config.prompts_file, tokenizer=None))


def load_policy_and_reference(config, accelerator, tokenizer, load_reference: bool = True):
    """The policy and its frozen reference; the reference is None when ``load_reference`` is false
    (a method without a KL term: no second model in memory, no reference forward pass)."""
    policy = load_causal_lm(config.model_name_or_path, tokenizer, trust_remote_code=config.trust_remote_code)
    reference = None
    if config.use_peft:
        policy = add_lora(policy, config)
        if load_reference:
            reference = AdapterFreeReference(policy)  # the starting policy, without a second copy
    elif load_reference:
        reference = load_causal_lm(config.ref_model_path or config.model_name_or_path, tokenizer,
                                   trust_remote_code=config.trust_remote_code).to(accelerator.device).eval()
        reference.requires_grad_(False)
    return policy, reference


def load_roles(config, accelerator, tokenizer, reward_function: RewardFunction | None):
    """The frozen roles and the policy they start from: (policy, reference, reward)."""
    policy, reference = load_policy_and_reference(config, accelerator, tokenizer)
    if config.reward_model_path:
        reward = RewardModelScorer(config.reward_model_path.split(","), tokenizer, accelerator.device,
                                   trust_remote_code=config.trust_remote_code, aggregation=config.reward_aggregation,
                                   uncertainty_coef=config.reward_uncertainty_coef)
    else:
        reward = FunctionScorer(reward_function)
    return policy, reference, reward


def load_functions_and_roles(config, accelerator, tokenizer, records):
    """PPO's roles: the reward and gold functions (checked first), then the policy, reference and reward."""
    reward_function, gold_function = load_reward_functions(config, records)
    return (*load_roles(config, accelerator, tokenizer, reward_function), gold_function)


@torch.no_grad()
def sample_and_score(policy, reference, reward, batch: dict, tokenizer, sampling: SamplingParams, config, accelerator,
                     record_logprobs: bool, examples: list[dict] | None = None) -> Samples:
    """The first steps of every online method. ``record_logprobs``: keep the sampler's own
    log-probs of the sampled tokens in ``rollout.logprobs`` (they equal a forward pass's to ~1e-5).
    ``examples``: the batch's prompt examples, whose ``raw_prompt`` and ``fields`` a reward
    function gets (without them, the decoded prompts and no fields)."""
    device = accelerator.device
    # 1. Rollout: sample responses to the prompts from the current policy.
    # ``policy``: the policy model or the run's GenerationBackend (rlhf/rollout/backends.py).
    rollout = as_backend(policy, tokenizer).generate(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                                     sampling, record_logprobs=record_logprobs)
    prompt_texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    response_texts = decode_responses(tokenizer, rollout)
    raw_prompts = [e.get("raw_prompt", text) for e, text in zip(examples, prompt_texts)] if examples else None
    fields = [e.get("fields", {}) for e in examples] if examples else None
    # 2. Score: the reward of each whole response, penalised if it never ended.
    scores = reward(rollout, prompt_texts, response_texts, raw_prompts, fields)  # (B,)
    if config.missing_eos_penalty:
        scores = scores - config.missing_eos_penalty * (~rollout.ended).float()
    skipped = None
    if getattr(config, "skip_bad_rewards", False):  # NaN scores: rewards skipped, never averaged in
        scores, skipped = drop_skipped_rewards(scores)
    # 3. Log-probs of the sampled tokens under the reference, at the sampling temperature (none without one).
    ref_logprobs = None if reference is None else response_logprobs(
        reference, rollout.query_responses, rollout.attention_mask, rollout.prompt_length, config.temperature)  # (B, R)
    return Samples(rollout, prompt_texts, response_texts, scores, ref_logprobs, fields, reward_skipped=skipped)


def drop_skipped_rewards(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores with each skipped reward (NaN, see RewardFunction.skip_errors) replaced by the mean of
    the others, so that running score statistics are not moved by them, and which were skipped:
    ((B,), (B,) bool). The trainer leaves them out of every loss through ``Samples.loss_mask``."""
    skipped = torch.isnan(scores)  # (B,)
    if not skipped.any():
        return scores, skipped
    kept = ~skipped
    placeholder = scores[kept].mean() if kept.any() else scores.new_zeros(())
    return torch.where(skipped, placeholder, scores), skipped  # (B,)


def gold_scores(samples: Samples, gold_function) -> list[float]:
    """The gold score of each sample (computed once): the decoded prompts, as in evaluation."""
    if samples.gold_scores is None:
        samples.gold_scores = gold_function(samples.prompt_texts, samples.response_texts,
                                            samples.rollout.ended.tolist(), samples.fields)
    return samples.gold_scores


def sample_metrics(samples: Samples, gold_function) -> dict[str, Any]:
    """This process's numbers about the samples themselves (every online method logs them)."""
    mask = samples.rollout.response_mask.float()  # (B, R)
    metrics = {"objective/scores": samples.scores.mean(), "response/length": mask.sum(1).mean(),
               "response/ended_frac": samples.rollout.ended.float().mean()}
    if gold_function is not None:
        gold = gold_scores(samples, gold_function)
        metrics["gold/score"] = sum(gold) / len(gold)
    if samples.reward_skipped is not None:  # skip_bad_rewards: how many of this batch's rewards were skipped
        metrics["objective/skipped_rewards"] = samples.reward_skipped.float().sum()
    return metrics


def mean_over_processes(metrics: dict[str, Any], accelerator) -> dict[str, float]:
    return {k: accelerator.reduce(torch.as_tensor(v, dtype=torch.float32, device=accelerator.device), "mean").item()
            for k, v in metrics.items()}


@dataclass
class OnlineRun:
    """An online run's roles, prompts, optimizer, checkpoints and logs, and its step loop."""

    config: Any
    stage: str
    accelerator: Any
    model: Any  # the trainable module, prepared by accelerate (the policy, or the policy and a value)
    policy_of: Callable[[Any], Any]  # the unwrapped trainable module -> the policy
    reference: Any
    reward: Any
    tokenizer: Any
    prompts: list[dict]
    sampler: PromptSampler
    sampling: SamplingParams
    gold_function: Callable | None
    optimizer: Any
    scheduler: Any
    guard: NonFiniteGuard
    checkpointer: Checkpointer
    logger: RunLogger
    saved: dict[str, Any] | None
    algorithm_state: dict[str, Any]
    prompt_info: dict[str, Any] = field(default_factory=dict)  # for the summary: counts and formats
    eval_prompts: list[dict] = field(default_factory=list)  # eval_prompts_file's, tokenized
    backend: GenerationBackend | None = None  # where rollouts come from; default: transformers' generate
    monitor: MonitorWatcher | None = None  # signs of reward hacking in the logged metrics (monitors.py)
    stopped_at: int | None = None  # the step a monitor in monitor_stop_on ended the run at

    def __post_init__(self):
        if self.backend is None:
            self.backend = TransformersBackend(self.policy, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id)
        if self.monitor is None:
            self.monitor = make_monitor(self.config, self.accelerator.is_main_process)
            if self.saved is not None and "monitor" in self.saved:
                self.monitor.load_state_dict(self.saved["monitor"])

    @classmethod
    def start(cls, config, stage: str, make_trainable: Callable[[Any, Any], Any], policy_of: Callable[[Any], Any],
              trainable_name: str, num_training_steps: int, algorithm_state: dict[str, Any],
              postfix_keys: tuple[str, ...], load_models: Callable | None = None) -> "OnlineRun":
        """``make_trainable(policy, tokenizer)``: the module the optimizer trains, checkpointed as
        ``trainable_name``; ``algorithm_state``: the algorithm's objects with state_dict/load_state_dict
        (a KL controller, say), checkpointed under their names. ``load_models(config, accelerator,
        tokenizer, records) -> (policy, reference, reward, gold_function)`` replaces the default
        (``load_functions_and_roles``) for a method with other roles (GRPO: several weighted rewards,
        no reference when beta is 0); it checks reward functions before it loads models."""
        check_output_dir(config)  # before anything loads; the folder is written once all has loaded
        accelerator = make_accelerator(config)
        seed_everything(config.seed + accelerator.process_index)  # each process samples its own rollouts
        # Inputs first: tokenizer, prompts, reward functions (called once); then the models.
        tokenizer = load_tokenizer(config.model_name_or_path, trust_remote_code=config.trust_remote_code,
                                   padding_side="left")
        records = load_prompt_records(config, config.prompts_file, tokenizer, config.skip_bad_records)
        eval_file = config.eval_prompts_file
        eval_records = load_prompt_records(config, eval_file, tokenizer) if eval_file else []
        policy, reference, reward, gold_function = (load_models or load_functions_and_roles)(config, accelerator,
                                                                                            tokenizer, records)
        model = make_trainable(policy, tokenizer)
        disable_dropout(model)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        _warn_if_not_sft(config, stage, accelerator)
        prompts = tokenize_prompt_records(config, records, tokenizer, config.prompts_file, accelerator.is_main_process)
        eval_prompts = tokenize_prompt_records(config, eval_records, tokenizer, config.eval_prompts_file,
                                               accelerator.is_main_process) if eval_records else []
        if accelerator.is_main_process:
            warn_on_format_mismatch(config, records, tokenizer)
        output_dir = prepare_output_dir(config, accelerator)  # everything loaded fine: now the folder is written
        sampler = PromptSampler(len(prompts), config.rollout_batch_size, config.seed, accelerator.process_index)
        sampling = SamplingParams(max_new_tokens=config.max_new_tokens, min_new_tokens=config.min_new_tokens,
                                  temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)
        optimizer = make_optimizer(model.parameters(), config)
        scheduler = make_scheduler(optimizer, config, num_training_steps)
        model, optimizer = prepare_trainable(accelerator, model, optimizer)  # DDP, FSDP2 or ZeRO
        guard = NonFiniteGuard(config.max_nonfinite_skips)
        # Frozen roles (reference, reward) are not checkpointed: the saved config names them.
        checkpointer = Checkpointer(output_dir, accelerator, {trainable_name: model}, optimizer, scheduler,
                                    config.save_total_limit)
        resume_from = resolve_resume(config, output_dir)
        saved = checkpointer.load(resume_from) if resume_from else None
        if saved is not None:
            for name, obj in algorithm_state.items():
                obj.load_state_dict(saved[name])
            sampler.load_state_dict(saved["prompt_sampler"][accelerator.process_index])
            guard.skipped = saved["nonfinite_skipped"]
        if saved is not None and accelerator.is_main_process:
            keep_samples_until(output_dir / SAMPLES_FILE, saved["step"])
        logger = RunLogger(output_dir, accelerator, config.max_steps, config.report_to, config.disable_tqdm, stage,
                           postfix_keys=postfix_keys, resume=saved)
        return cls(config, stage, accelerator, model, policy_of, reference, reward, tokenizer, prompts, sampler,
                   sampling, gold_function, optimizer, scheduler, guard, checkpointer, logger, saved, algorithm_state,
                   prompt_summary(records, prompts), eval_prompts)

    @property
    def policy(self):
        return self.policy_of(self.accelerator.unwrap_model(self.model))

    def sample_and_score(self, record_logprobs: bool, num_generations: int = 1) -> Samples:
        """The next batch of prompts, answered by the policy and scored; each prompt ``num_generations``
        times, its answers contiguous (B = prompts x num_generations, as GRPO's groups need)."""
        examples = [self.prompts[i] for i in self.sampler.next_batch() for _ in range(num_generations)]
        batch = collate_prompts(examples, self.tokenizer.pad_token_id)
        with gathered(self.accelerator):  # FSDP2: generate from the full policy, gathered once
            return sample_and_score(self.backend, self.reference, self.reward, batch, self.tokenizer, self.sampling,
                                    self.config, self.accelerator, record_logprobs, examples)

    def should_log(self, step: int) -> bool:
        return step % self.config.logging_steps == 0 or step == self.config.max_steps

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Log a step's metrics (averaged over processes, so every process's monitors agree), with
        the monitors' statistics beside them as ``monitor/<name>``."""
        self.logger.log(step, {**metrics, **self.monitor.observe(step, metrics)})

    def train(self, step_fn: Callable[[int], Samples]) -> None:
        """``step_fn(step)`` for each step from the resumed one to max_steps; after each, a few
        sample responses, held-out evaluation, and a checkpoint when due or when a signal came."""
        config = self.config
        with StopSignals() as stop:
            for step in range((self.saved or {}).get("step", 0) + 1, config.max_steps + 1):
                samples = step_fn(step)
                self.backend.update_weights(self.policy)  # the one hook: the next rollouts use the updated policy
                self.logger.advance()
                if self.monitor.stop_reason is not None:  # monitor_stop_on: end here; finish() saves the policy
                    self.stopped_at = step
                    break
                if config.sample_every and step % config.sample_every == 0:
                    self._log_samples(step, samples)
                if config.eval_prompts_file and config.eval_steps and step % config.eval_steps == 0 \
                        and step < config.max_steps:
                    self.logger.log(step, self.evaluate())
                signum = stop.requested(self.accelerator)
                if signum or (config.save_steps and step % config.save_steps == 0 and step < config.max_steps):
                    path = self.checkpointer.save(step, self.training_state())
                    if signum:
                        raise TrainingInterrupted(signum, step, path)
        self.logger.end_progress()

    def _log_samples(self, step: int, samples: Samples) -> None:
        """The first few samples: TensorBoard text, and one JSON line each in output_dir/samples.jsonl."""
        n = self.config.num_samples_to_log
        rows = [{"step": step, "prompt": p, "response": r, "score": s}
                for p, r, s in zip(samples.prompt_texts[:n], samples.response_texts[:n], samples.scores.tolist())]
        if self.gold_function is not None:
            for row, gold in zip(rows, gold_scores(samples, self.gold_function)):
                row["gold_score"] = gold
        self.logger.write_text("samples", "\n\n".join(f"{r['prompt']!r} -> {r['response']!r} (score {r['score']:.3f})"
                                                      for r in rows), step)
        if self.accelerator.is_main_process:
            with open(Path(self.config.output_dir) / SAMPLES_FILE, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    def training_state(self) -> dict[str, Any]:
        samplers = [self.sampler.state_dict()]
        if self.accelerator.num_processes > 1:
            samplers = [None] * self.accelerator.num_processes
            torch.distributed.all_gather_object(samplers, self.sampler.state_dict())
        return {**{name: obj.state_dict() for name, obj in self.algorithm_state.items()}, "prompt_sampler": samplers,
                "nonfinite_skipped": self.guard.skipped, "metrics_lines": self.logger.lines_written,
                "monitor": self.monitor.state_dict()}

    def evaluate(self) -> dict[str, float]:
        """Gold score, reward, KL to the reference and length on the held-out prompts."""
        config = self.config
        with gathered(self.accelerator):  # FSDP2: processes may generate for different numbers of batches
            results = evaluate_policy(self.policy, self.reference, self.tokenizer, self.eval_prompts, self.sampling,
                                      reward=self.reward, gold_function=self.gold_function,
                                      batch_size=config.rollout_batch_size, accelerator=self.accelerator,
                                      progress="" if config.disable_tqdm else "ppo eval")
        return {f"eval/{k}": v for k, v in results.items()}

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Final evaluation on held-out prompts, then save the policy: with LoRA, the adapter alone
        (output_dir/adapter) and then the policy with its adapters merged (output_dir/model)."""
        config = self.config
        summary.update(self.prompt_info)
        summary.update(self.monitor.summary())
        if self.stopped_at is not None:
            summary["steps"] = self.stopped_at
        if self.logger.history:
            summary.update({k: v for k, v in self.logger.history[-1].items() if k.startswith(("objective/", "gold/"))})
        if config.eval_prompts_file:
            eval_metrics = self.evaluate()
            self.logger.log(config.max_steps, eval_metrics)
            summary.update(eval_metrics)
        policy = self.policy
        if config.use_peft:
            policy = save_adapter_and_merge(policy, self.tokenizer, config.output_dir, self.accelerator)
        return finish_run(policy, self.tokenizer, summary, config, self.accelerator, self.logger, self.stage)


def make_monitor(config, warn: bool) -> MonitorWatcher:
    """The run's monitors, from its MonitorOptions (a config without them: the defaults)."""
    if not hasattr(config, "monitor_stop_list"):
        return MonitorWatcher(warn=warn)
    return MonitorWatcher(config.monitor_threshold_values(), config.monitor_stop_list(), config.monitor_baseline_steps,
                          config.monitor_window, warn=warn)


def keep_samples_until(path: Path, step: int) -> None:
    """A resumed run continues samples.jsonl after its checkpoint's step: lines written later by the
    interrupted run are dropped, so each step's samples appear once."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))


def _warn_if_not_sft(config, stage: str, accelerator) -> None:
    if accelerator.is_main_process and training_stage_of(config.model_name_or_path) not in POLICY_STAGES:
        warnings.warn(f"{config.model_name_or_path} is not an `rlhf sft` checkpoint: {stage.upper()} from a model that "
                      "skipped SFT explores poorly and the KL anchor is a model that does not follow instructions",
                      stacklevel=3)
