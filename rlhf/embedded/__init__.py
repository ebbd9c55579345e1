"""The embedded default: a tiny pretrained base model, an instruction task with a known
gold reward, and simulated labelers, so the whole pipeline runs offline and its outcome
can be measured."""

from pathlib import Path

EMBEDDED_BASE_MODEL = str(Path(__file__).resolve().parent / "base_model")
