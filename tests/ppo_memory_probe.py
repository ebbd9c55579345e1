"""Measure the peak memory of PPO steps in a fresh process, as bench/probe.py does: the resident-set
high-water mark (VmHWM), reset when training starts (/proc/self/clear_refs "5").

    python tests/ppo_memory_probe.py --model_name_or_path ... (any `rlhf ppo` options)

Prints one JSON line: the process's RSS before the run (after every import), at train start, and
the training's high-water mark, in bytes. What the run's tensors took is peak - before.
"""

from __future__ import annotations

import json
import re
import sys


def status_bytes(field: str) -> int:
    text = open("/proc/self/status").read()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main(argv: list[str]) -> None:
    # The modules the run imports lazily are imported before the baseline: code is not what is measured.
    import accelerate  # noqa: F401
    import peft  # noqa: F401
    import torch
    import transformers.models.gpt2.modeling_gpt2  # noqa: F401

    from rlhf.config.base import parse_config
    from rlhf.config.ppo import PPOConfig
    from rlhf.trainers import online, ppo

    torch.set_num_threads(1)
    config = parse_config(PPOConfig, argv)
    marks = {"rss_before": status_bytes("VmRSS"), "rss_file_before": status_bytes("RssFile")}
    train = online.OnlineRun.train

    def measured_train(self, step_fn):
        marks["rss_train_start"] = status_bytes("VmRSS")
        marks["rss_file_train_start"] = status_bytes("RssFile")  # file-backed: code and mapped weights
        reset_peak()
        train(self, step_fn)
        marks["peak_rss_train"] = status_bytes("VmHWM")
        marks["rss_file_train_end"] = status_bytes("RssFile")

    online.OnlineRun.train = measured_train
    ppo.run(config)
    print(json.dumps(marks))


if __name__ == "__main__":
    main(sys.argv[1:])
