"""``rlhf label add-labeler NAME``: a new labeler and their private link (printed once)."""

from __future__ import annotations

from rlhf.config.labeling import AddLabelerConfig
from rlhf.feedback.labeling import LabelStore

CONFIG_CLASS = AddLabelerConfig
POSITIONAL = "name"  # `rlhf label add-labeler alice` means --name alice


def run(config: AddLabelerConfig) -> str:
    with LabelStore(config.db) as store:
        token = store.add_labeler(config.name)
    print(f"{config.name}: {config.base_url.rstrip('/')}/l/{token}")
    print("(the link is the labeler's password: it is shown only now; a script may send Authorization: Bearer <token>)")
    return token
