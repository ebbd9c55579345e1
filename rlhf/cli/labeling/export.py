"""``rlhf label export``: the labels as rankings for ``rlhf rm``, each with its labeler and the weight of
that label (``rlhf rm`` reads it; no ``--labeler_weights`` needed)."""

from __future__ import annotations

import shlex

from rlhf.atomic_io import write_jsonl
from rlhf.config.base import ConfigError
from rlhf.config.labeling import LabelExportConfig
from rlhf.feedback.labeling import LabelStore
from rlhf.feedback.labeling.report import export_records, labeler_weights_option, quality_report

CONFIG_CLASS = LabelExportConfig


def run(config: LabelExportConfig) -> dict:
    with LabelStore(config.db) as store:
        dump = store.dump()
    report = quality_report(dump)
    records, counts = export_records(dump, report, config.min_weight)
    if not records:
        raise ConfigError(f"nothing to export from {config.db} (left out: {counts or 'no labels yet'})")
    write_jsonl(config.output_file, records)
    weights = labeler_weights_option(report, config.min_weight)
    left_out = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()) if kind != "exported") or "none"
    print(f"wrote {len(records)} records ({counts.get('exported', 0)} labels) to {config.output_file}; left out: {left_out}")
    print("labeler weights now (agreement x gold x experience): " + (weights or "none"))
    print("each record's weight: agreement x gold x min(1, k / ramp) for the labeler's k-th label")
    print(f"train: rlhf rm --train_file {shlex.quote(str(config.output_file))} "
          "--model_name_or_path <sft model> --output_dir <dir>")
    return {"records": len(records), "counts": counts, "labeler_weights": weights}
