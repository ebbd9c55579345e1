"""People's labels: a labeling project's store (SQLite or PostgreSQL), the assignment of items,
and labeler quality (agreement, gold accuracy, weights). Web-free: ``rlhf.app`` serves it, and
scripts and tests can use it without a server."""

from rlhf.feedback.labeling.db import StoreError
from rlhf.feedback.labeling.items import Item, load_items
from rlhf.feedback.labeling.store import Account, LabelingError, LabelStore

__all__ = ["Account", "Item", "LabelStore", "LabelingError", "StoreError", "load_items"]
