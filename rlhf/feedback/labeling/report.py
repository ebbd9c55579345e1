"""What the admin page shows and what the export writes, computed from a store's ``dump()``:
progress, each labeler's counts, time per label, agreement (Cohen's kappa matrix, Krippendorff's
alpha), gold accuracy, weight and flags (rules in ``quality``)."""

from __future__ import annotations

import statistics
from collections import defaultdict

from rlhf.feedback.labeling.quality import (WeightRule, alpha_units, comparisons_by_labeler, gold_accuracy,
                                            kappa_matrix, consensus_kappas, krippendorff_alpha_nominal,
                                            label_weight, labeler_flags, labeler_weight)
from rlhf.feedback.labeling.store import COUNTED, STRENGTH_MARGINS


def weight_rule(settings: dict) -> WeightRule:
    return WeightRule(ramp=int(settings["ramp"]), kappa_threshold=float(settings["kappa_threshold"]),
                      gold_threshold=float(settings["gold_threshold"]), min_shared=int(settings["min_shared"]))


def quality_report(dump: dict) -> dict:
    """Everything the admin page and ``rlhf label export`` need, as plain data."""
    items, labels, settings = dump["items"], dump["labels"], dump["settings"]
    rule = weight_rule(settings)
    regular = [lab for lab in labels if not items[lab["item_id"]]["is_gold"]]
    ranked = [(lab["labeler"], lab["item_id"], lab["tiers"]) for lab in regular if lab["kind"] == "ranking"]
    by_labeler = comparisons_by_labeler(ranked)
    for name in dump["labelers"]:
        by_labeler.setdefault(name, {})
    matrix = kappa_matrix(by_labeler, min_shared=1)
    alpha = krippendorff_alpha_nominal(alpha_units(by_labeler))
    gold_answers = defaultdict(list)
    for lab in labels:
        item = items[lab["item_id"]]
        if item["is_gold"] and lab["kind"] == "ranking":
            gold_answers[lab["labeler"]].append((lab["tiers"], item["gold_ranking"]))
    kappas = consensus_kappas(matrix, dump["labelers"])
    rows = []
    for name in dump["labelers"]:
        mine = [lab for lab in labels if lab["labeler"] == name]
        counted = [lab for lab in mine if lab["kind"] in COUNTED]
        seconds = [lab["submitted_at"] - lab["started_at"] for lab in counted]
        kappa, shared = kappas[name]
        gold, n_gold = gold_accuracy(gold_answers[name])
        rows.append({"name": name, "labels": len(counted), "skips": len(mine) - len(counted),
                     "gold_labels": len(gold_answers[name]),
                     "seconds_per_label": statistics.median(seconds) if seconds else None,
                     "kappa": kappa, "shared_comparisons": shared, "gold_accuracy": gold, "gold_comparisons": n_gold,
                     **labeler_weight(kappa, gold, len(counted), rule),
                     "flags": labeler_flags(kappa, shared, gold, n_gold, rule)})
    regular_items = [item for item in items.values() if not item["is_gold"]]
    overlap = int(settings["overlap"])
    return {
        "progress": {"items": len(regular_items), "gold_items": len(items) - len(regular_items),
                     "complete": sum(item["label_count"] >= overlap for item in regular_items),
                     "labels": sum(min(item["label_count"], overlap) for item in regular_items),
                     "labels_needed": overlap * len(regular_items)},
        "labelers": rows,
        "kappa": [{"a": a, "b": b, "kappa": k, "shared": n} for (a, b), (k, n) in sorted(matrix.items())],
        "alpha": alpha, "alpha_comparisons": sum(len(v) >= 2 for v in alpha_units(by_labeler).values()),
        "rule": {"ramp": rule.ramp, "kappa_threshold": rule.kappa_threshold, "gold_threshold": rule.gold_threshold,
                 "min_shared": rule.min_shared},
        "settings": {k: v for k, v in settings.items() if k != "guidelines"},
    }


def export_records(dump: dict, report: dict, min_weight: float = 0.0) -> tuple[list[dict], dict]:
    """The labels as rankings-file records, ready for ``rlhf rm``:

    - a strict ranking: ``{"prompt", "responses", "ranking", "labeler", "weight"}`` (best first);
    - K = 2 with a strength: ``{"prompt", "chosen", "rejected", "margin", "labeler", "weight"}``,
      the comparison format, the one whose margin ``rlhf rm`` reads (``--use_margin``);
    - a ranking with ties: one comparison record per pair of different tiers (a tie says
      nothing about which is better, and the rankings format has no ties).

    ``weight`` is the weight of that label (``quality.label_weight``): the labeler's agreement
    x gold x min(1, k / ramp) for its k-th confirmed label in the order stored, so a new
    labeler's early comparisons count less than its later ones; ``rlhf rm`` multiplies it into
    the pair's loss weight.

    Gold items (checks, not data), "all bad" and skips are left out, and so is every label of
    a labeler whose current weight (``report``'s) is below ``min_weight``: the filter drops
    labelers, not early labels (those are already down-weighted, and dropping them would cut
    every labeler's first labels, careful or not). Returns (records, counts)."""
    items = dump["items"]
    rows = {row["name"]: row for row in report["labelers"]}
    ramp = int(report["rule"]["ramp"])
    records, counts, given = [], defaultdict(int), defaultdict(int)
    for lab in dump["labels"]:
        item = items[lab["item_id"]]
        if lab["kind"] in COUNTED:  # k counts what the labeler's experience counts: gold and "all bad" too
            given[lab["labeler"]] += 1
        if item["is_gold"]:
            counts["gold"] += 1
            continue
        if lab["kind"] != "ranking":
            counts[lab["kind"]] += 1
            continue
        row = rows[lab["labeler"]]
        if row["weight"] < min_weight:
            counts["below_min_weight"] += 1
            continue
        weight = label_weight(row["agreement"], row["gold"], given[lab["labeler"]], ramp)
        tiers, responses = lab["tiers"], item["responses"]
        base = {"prompt": item["prompt"], "labeler": lab["labeler"], "weight": round(weight, 6)}
        if lab["strength"] is not None:
            (best,), (worst,) = tiers
            records.append({**base, "chosen": responses[best], "rejected": responses[worst],
                            "margin": STRENGTH_MARGINS[lab["strength"]]})
        elif all(len(tier) == 1 for tier in tiers):
            records.append({**base, "responses": responses, "ranking": [tier[0] for tier in tiers]})
        else:
            for n, better in enumerate(tiers):
                for worse in tiers[n + 1:]:
                    records.extend({**base, "chosen": responses[b], "rejected": responses[w]}
                                   for b in better for w in worse)
            counts["with_ties"] += 1
        counts["exported"] += 1
    return records, dict(counts)


def labeler_weights_option(report: dict, min_weight: float = 0.0) -> str:
    """Each exported labeler's current weight, ``alice=0.93,bob=0.41``, for people to read (and
    ``rlhf rm --labeler_weights`` on a hand-made file); an export's records carry their own weights."""
    return ",".join(f"{row['name']}={row['weight']:.4g}" for row in report["labelers"]
                    if row["weight"] >= min_weight and row["labels"])
