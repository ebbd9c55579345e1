"""``rlhf label init``: check the candidates (and gold) files, then create the project."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rlhf.config.base import ConfigError
from rlhf.config.labeling import LabelInitConfig
from rlhf.feedback.labeling import Item, LabelStore, load_items

CONFIG_CLASS = LabelInitConfig


def embedded_gold_item(item: Item) -> Item:
    """``item`` with its responses ranked by the embedded task's gold reward (best first)."""
    from rlhf.embedded.gold import gold_reward

    scores = [gold_reward(item.prompt, r, e) for r, e in zip(item.responses, item.ended)]
    return dataclasses.replace(item, gold_ranking=sorted(range(len(scores)), key=lambda i: -scores[i]))


def run(config: LabelInitConfig) -> dict:
    # Every file is read and checked before the database is touched: a bad line leaves nothing behind.
    items = load_items(config.candidates)
    gold = load_items(config.gold_items, gold=True) if config.gold_items else []
    if config.embedded_gold:
        if config.embedded_gold >= len(items):
            raise ConfigError(f"--embedded_gold {config.embedded_gold} leaves no items of the {len(items)} to label")
        items, extra = items[:-config.embedded_gold], items[-config.embedded_gold:]
        gold += [embedded_gold_item(item) for item in extra]
    guidelines = ""
    if config.guidelines:
        path = Path(config.guidelines)
        if not path.is_file():
            raise ConfigError(f"--guidelines {path} does not exist")
        guidelines = path.read_text(encoding="utf-8")
    store = LabelStore.create(config.db, items, gold, overlap=config.overlap, gold_rate=config.gold_rate,
                              reservation_seconds=config.reservation_seconds, guidelines=guidelines,
                              ramp=config.ramp, kappa_threshold=config.kappa_threshold,
                              gold_threshold=config.gold_threshold, min_shared=config.min_shared)
    store.close()
    print(f"created a labeling project in {config.db}: {len(items)} items x overlap {config.overlap}"
          f" = {len(items) * config.overlap} labels to collect, {len(gold)} gold items (rate {config.gold_rate:g})")
    print(f"next: rlhf label admin-token --db {config.db}; rlhf label add-labeler NAME --db {config.db}; "
          f"rlhf serve --db {config.db}")
    return {"items": len(items), "gold_items": len(gold)}
