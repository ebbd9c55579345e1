"""Load causal LMs and tokenizers from local folders only, with a usable pad token.

Nothing here ever reaches the Hugging Face Hub: a path that does not exist is an error,
not a download. Weights load through safetensors (``use_safetensors=True``), so a
pickled checkpoint is refused rather than unpickled.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf.config.base import ConfigError
from rlhf.errors import UserError

PAD_TOKEN = "<|pad|>"
# Written beside the weights of every model a stage saves, so later stages can tell where a
# checkpoint came from (e.g. warn when PPO starts from a model that skipped SFT).
TRAINING_INFO_FILE = "rlhf_training.json"


class ModelPathError(UserError, FileNotFoundError):
    """A model or tokenizer path that is not a local save_pretrained folder."""


def check_local_model_path(path: str | Path) -> Path:
    """Return ``path`` as a Path if it is a local model folder, else raise a clear error."""
    path = Path(path)
    if not path.is_dir():
        raise ModelPathError(
            f"model path {str(path)!r} is not a local folder. rlhf never downloads from the Hugging Face Hub: "
            "download the model first (e.g. `huggingface-cli download NAME --local-dir DIR`) and pass DIR."
        )
    if not (path / "config.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise ModelPathError(f"model path {str(path)!r} has neither config.json nor tokenizer_config.json")
    return path


def load_tokenizer(path: str | Path, trust_remote_code: bool = False, padding_side: str = "right"):
    """Load a tokenizer from a local folder and make sure it has a pad token distinct from end-of-text.

    Using EOS as padding (a common shortcut) makes a model unable to learn to stop when
    padding is masked out of the loss, so a missing pad token is added as ``<|pad|>``;
    callers must then resize the model's embeddings (``load_model_and_tokenizer`` does).
    """
    from transformers import AutoTokenizer

    path = check_local_model_path(path)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    if tokenizer.eos_token is None:
        raise ConfigError(f"tokenizer at {path} has no end-of-text (eos) token, which generation and the losses need: "
                          f"set \"eos_token\" in {path / 'tokenizer_config.json'} to the token that ends a response "
                          "(e.g. \"<|endoftext|>\" or the chat template's end-of-turn token)")
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(path: str | Path, tokenizer=None, dtype: torch.dtype = torch.float32,
                   trust_remote_code: bool = False):
    """Load a causal LM from a local folder (safetensors only), resized to ``tokenizer`` if given."""
    from transformers import AutoModelForCausalLM

    path = check_local_model_path(path)
    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, use_safetensors=True, dtype=dtype, trust_remote_code=trust_remote_code
    )
    if tokenizer is not None:
        align_model_with_tokenizer(model, tokenizer)
    use_fused_gelu(model)
    return model


def use_fused_gelu(model) -> None:
    """Swap GPT-2's ``gelu_new`` (the tanh GELU written as six element-wise ops) for the same
    function as one fused kernel (``gelu_pytorch_tanh``): 3.7x faster forward and backward on a
    CPU, outputs equal to within 3e-7, and it took a third of a GPT-2 training step. The config
    keeps its name, so saved checkpoints are unchanged."""
    from transformers.activations import GELUTanh, NewGELUActivation

    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())


def align_model_with_tokenizer(model, tokenizer) -> None:
    """Grow the embeddings if the tokenizer gained tokens, and record pad/eos ids in the configs."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id


def load_model_and_tokenizer(path: str | Path, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """The usual pair: a tokenizer with a proper pad token and the model resized to match it."""
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    model = load_causal_lm(path, tokenizer=tokenizer, dtype=dtype, trust_remote_code=trust_remote_code)
    return model, tokenizer


def training_info(path: str | Path) -> dict:
    """What rlhf wrote beside the checkpoint at ``path`` (TRAINING_INFO_FILE: the stage that
    produced it, its base model, the prompt format it was trained on); {} if nothing readable."""
    import json

    info = Path(path) / TRAINING_INFO_FILE
    try:
        values = json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def training_stage_of(path: str | Path) -> str | None:
    """The rlhf stage that produced the checkpoint at ``path`` ("sft", "rm", ...), or None."""
    return training_info(path).get("stage")


def position_limit(model_config) -> int | None:
    """The longest sequence the model's position embeddings cover, or None when it does not say
    (e.g. a model without learned or bounded positions)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def resolve_max_length(max_length: int, model_config, model_path: str | Path, option: str = "max_length") -> int:
    """``max_length`` checked against the model's position limit; 0 means that limit. A value past
    the limit would die deep in the model with an IndexError on the first long batch."""
    limit = position_limit(model_config)
    if max_length <= 0:
        if limit is None:
            raise ConfigError(f"{model_path}: the model's config gives no position limit; set --{option}")
        return limit
    if limit is not None and max_length > limit:
        raise ConfigError(f"{option} {max_length} is longer than {model_path} can take ({limit} positions, "
                          f"max_position_embeddings); set --{option} {limit} or less (0 means the model's limit)")
    return max_length


def enable_gradient_checkpointing(module) -> int:
    """Turn on gradient checkpointing in every transformers model inside ``module`` (a policy, a
    reward/value model, PPO's policy-and-value pair): activations are recomputed in the backward
    pass instead of stored. Non-reentrant checkpointing, which also works with frozen inputs
    (LoRA) and DDP. Returns how many models were switched; 0 is an error."""
    from transformers import PreTrainedModel

    count = 0
    for sub in module.modules():
        if isinstance(sub, PreTrainedModel) and sub.supports_gradient_checkpointing and not _checkpointing(sub):
            if hasattr(sub, "activation_checkpointing_enable"):  # transformers >= 5.x's name
                sub.activation_checkpointing_enable({"use_reentrant": False})
            else:
                sub.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            sub.config.use_cache = False
            count += 1
    if count == 0 and not any(isinstance(s, PreTrainedModel) and _checkpointing(s) for s in module.modules()):
        raise ConfigError(f"gradient_checkpointing: {type(module).__name__} holds no transformers model that "
                          "supports it; drop --gradient_checkpointing")
    return count


def _checkpointing(model) -> bool:
    flag = getattr(type(model), "is_activation_checkpointing", None)
    return bool(model.is_activation_checkpointing if flag is not None else model.is_gradient_checkpointing)
