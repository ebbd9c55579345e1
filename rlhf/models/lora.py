"""LoRA (Hu et al. 2021) through peft: low-rank adapters on a frozen backbone.

Every stage takes the same options (``--use_peft``, ``--lora_r``, ...). It saves twice. Only the
adapters (and a reward or value model's scalar head) are trained, so the optimizer holds a
fraction of the weights and backward computes no weight gradients for the backbone; and the
frozen reference of PPO and DPO needs no copy of its own: it is the policy with its adapters
switched off, which is exactly the starting (SFT) policy.

A reward or value model (``ScalarModel``) gets its adapters on the backbone only: the scalar head
is new (or a reward model's) and is trained in full, as TRL's ``modules_to_save`` would.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf.models.scalar_model import ScalarModel

SCALAR_HEAD_FILE = "scalar_head.safetensors"  # a reward model's head, saved beside its adapter


def lora_config(config, task_type: str | None):
    """peft's LoraConfig from a stage config's lora_* options (TRL's names)."""
    from peft import LoraConfig

    targets = [t.strip() for t in config.lora_target_modules.split(",") if t.strip()]
    target_modules = (targets[0] if targets == ["all-linear"] else targets) or None  # None: peft's default per architecture
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=target_modules, task_type=task_type, bias="none")


def add_lora(model, config, task_type: str | None = "CAUSAL_LM"):
    """Wrap ``model`` in a peft model whose only trainable weights are the adapters."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(config, task_type))


def merge_lora(model):
    """The plain transformers model with the adapters folded into its weights (to save).

    An adapted LM head whose weight is tied to the input embeddings (GPT-2, small Llamas) is
    untied first: merging would otherwise add the head's delta to the embeddings as well, and
    the saved model would differ from the trained policy."""
    base = model.get_base_model()
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    embeddings = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    if head is not None and embeddings is not None and getattr(head, "base_layer", None) is not None \
            and head.base_layer.weight is embeddings.weight:
        head.base_layer.weight = torch.nn.Parameter(embeddings.weight.detach().clone())
        base.config.tie_word_embeddings = False
    return model.merge_and_unload()


class AdapterFreeReference:
    """The frozen reference as "the policy with adapters disabled": called like a causal LM,
    it runs the policy's own weights without its LoRA deltas, under no_grad."""

    def __init__(self, peft_model):
        self.peft_model = peft_model

    def __call__(self, **kwargs):
        with torch.no_grad(), self.peft_model.disable_adapter():
            return self.peft_model(**kwargs)

    def get_base_model(self):
        """The transformers model under the adapters (whose forward's keywords this call takes)."""
        return self.peft_model.get_base_model()



def add_lora_to_scalar_model(model: ScalarModel, config) -> ScalarModel:
    """Adapters on a reward/value model's backbone; its scalar head stays fully trainable."""
    model.backbone = add_lora(model.backbone, config, task_type=None)
    return model


def merge_adapters(model):
    """``merge_lora`` for a policy or a ScalarModel (whose adapters sit on its backbone)."""
    if isinstance(model, ScalarModel):
        model.backbone = merge_lora(model.backbone)
        return model
    return merge_lora(model)


class ScalarAdapter(torch.nn.Module):
    """What a reward model trained with LoRA saves as its adapter: peft's adapter of the backbone
    (adapter_config.json, adapter_model.safetensors) and, beside it, the fully trained scalar
    head (SCALAR_HEAD_FILE), without which the adapter alone scores nothing."""

    def __init__(self, model: ScalarModel):
        super().__init__()
        self.model = model

    def save_pretrained(self, path, **kwargs) -> None:
        from safetensors.torch import save_file

        self.model.backbone.save_pretrained(path, **kwargs)
        head = {name: t.detach().cpu().contiguous() for name, t in self.model.head.state_dict().items()}
        save_file(head, str(Path(path) / SCALAR_HEAD_FILE))


def adapter_to_save(model):
    """The object whose save_pretrained writes ``model``'s adapter (see ScalarAdapter)."""
    return ScalarAdapter(model) if isinstance(model, ScalarModel) else model
