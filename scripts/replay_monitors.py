"""Run the reward-hacking monitors over a finished online run's metrics.jsonl, as they would have
run while it trained (docs/ppo.md#monitors): a run from before the monitors existed, or other
thresholds tried on a run that exists.

    python scripts/replay_monitors.py runs/demo/ppo_no_kl/metrics.jsonl [--thresholds kl_acceleration=3]
"""

from __future__ import annotations

import argparse
import json
import warnings

from rlhf.config.base import parse_name_values
from rlhf.trainers.monitors import MonitorWatcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics_file")
    parser.add_argument("--thresholds", default="", help="name=value pairs, as --monitor_thresholds")
    args = parser.parse_args()
    watcher = MonitorWatcher(parse_name_values(args.thresholds, "--thresholds"))
    last: dict[str, float] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open(args.metrics_file, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                if "objective/kl" not in row:
                    continue  # an evaluation line
                # runs logged before objective/kl_k1 existed: their objective/kl is k1 (the default estimator)
                row.setdefault("objective/kl_k1", row["objective/kl"])
                last = watcher.observe(row["step"], row)
    for warning in caught:
        print(warning.message)
    print(json.dumps({"last": {k: round(v, 4) for k, v in last.items()}, **watcher.summary()}, indent=1))


if __name__ == "__main__":
    main()
