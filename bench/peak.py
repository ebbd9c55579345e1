"""This machine's fp32 matmul peak on the benchmark's thread count: the best of several large
square torch.matmul calls, 2 n^3 FLOPs each. Prints JSON.

    python bench/peak.py [--n 3072] [--repeats 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload as W  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3072)
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(W.THREADS)
    a, b = torch.randn(args.n, args.n), torch.randn(args.n, args.n)
    out = torch.empty(args.n, args.n)
    torch.matmul(a, b, out=out)  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    flops = 2 * args.n ** 3
    print(json.dumps({"n": args.n, "threads": W.THREADS, "best_s": min(times), "median_s": sorted(times)[len(times) // 2],
                      "peak_gflops": flops / min(times) / 1e9, "median_gflops": flops / sorted(times)[len(times) // 2] / 1e9}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
