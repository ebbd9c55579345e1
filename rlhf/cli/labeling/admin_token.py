"""``rlhf label admin-token``: a new admin token (the old one stops working) and its link."""

from __future__ import annotations

from rlhf.config.labeling import AdminTokenConfig
from rlhf.feedback.labeling import LabelStore

CONFIG_CLASS = AdminTokenConfig


def run(config: AdminTokenConfig) -> str:
    with LabelStore(config.db) as store:
        token = store.admin_token()
    print(f"admin: {config.base_url.rstrip('/')}/a/{token}")
    print(f"(for scripts such as `rlhf label simulate`: export RLHF_ADMIN_TOKEN={token})")
    return token
