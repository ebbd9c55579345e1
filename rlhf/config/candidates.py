"""Options of ``rlhf label generate``: K responses per prompt for people to rank."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.base import ConfigError
from rlhf.config.data_fields import PROMPT_FIELD_HELP, validate_field_names


@dataclass
class CandidatesConfig:
    """Sample K responses per prompt from a policy, spread over several temperatures, for labeling.

    InstructGPT's labelers ranked K = 4..9 outputs of the current models; pairs that differ only
    in whitespace teach a reward model nothing, so identical responses are dropped and redrawn."""

    model_name_or_path: str = field(
        default="",
        metadata={"help": "Local folder of the policy (a causal LM in save_pretrained format), e.g. runs/sft/model."},
    )
    prompts_file: str = field(
        default="",
        metadata={"help": "Prompts: JSONL/JSON of {prompt} (comparison and {messages} files give their prompts too)."},
    )
    output_file: str = field(
        default="candidates.jsonl",
        metadata={"help": "Where the candidates go: one JSON line {prompt, responses, temperatures, ended} per prompt, "
                  "the file `rlhf label init --candidates` reads."},
    )
    num_responses: int = field(default=4, metadata={"help": "K, the responses sampled per prompt (at least 2)."})
    temperatures: str = field(
        default="0.7,1.0,1.3",
        metadata={"help": "Comma-separated sampling temperatures; response j of a prompt is drawn at temperature "
                  "j mod len(temperatures), so K responses spread evenly over them."},
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Longest response in tokens."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling: keep the smallest set of tokens whose "
                                                "probability reaches top_p (1.0: all)."})
    max_resample_rounds: int = field(
        default=3,
        metadata={"help": "How many times a response that duplicates another of its prompt's (after stripping "
                  "whitespace) or is empty is redrawn. Past that the prompt keeps fewer than K responses, or is "
                  "left out if fewer than min_responses remain; both are counted in the summary."},
    )
    min_responses: int = field(
        default=2,
        metadata={"help": "A prompt with fewer distinct responses than this after resampling is left out (2: a "
                  "ranking needs a pair)."},
    )
    max_prompts: int = field(default=0, metadata={"help": "Use only the first this many prompts (0: all)."})
    batch_size: int = field(default=64, metadata={"help": "Prompts sampled together in one generate call."})
    prompt_field: str = field(default="prompt", metadata={"help": PROMPT_FIELD_HELP})
    seed: int = field(default=0, metadata={"help": "Seed of the sampling; same seed, same candidates."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace an existing output_file (named like the stages' option); without it an existing "
                  "file is an error."},
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow model code shipped with the checkpoint to run. Off unless you trust its source."},
    )

    def temperature_list(self) -> list[float]:
        try:
            values = [float(t) for t in self.temperatures.split(",") if t.strip()]
        except ValueError:
            raise ConfigError(f"temperatures must be comma-separated numbers, e.g. 0.7,1.0,1.3; got "
                              f"{self.temperatures!r}") from None
        return values

    def validate(self) -> None:
        if not self.model_name_or_path:
            raise ConfigError("label generate needs --model_name_or_path: a local folder of the policy to sample")
        if not self.prompts_file:
            raise ConfigError("label generate needs --prompts_file (JSONL/JSON of {prompt})")
        if self.num_responses < 2:
            raise ConfigError(f"num_responses must be at least 2 (a ranking needs a pair), got {self.num_responses}")
        temperatures = self.temperature_list()
        if not temperatures or any(not t > 0 for t in temperatures):
            raise ConfigError(f"temperatures must be positive numbers, got {self.temperatures!r}")
        if not 2 <= self.min_responses <= self.num_responses:
            raise ConfigError(f"min_responses must be between 2 and num_responses={self.num_responses}, "
                              f"got {self.min_responses}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_resample_rounds", "max_prompts"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, got {getattr(self, name)}")
        validate_field_names(self, ("prompt_field",))
