"""Where OUR time goes in one stage: py-spy samples of the training loop, attributed to lines of
rlhf/ and to the library code they spend it in; optionally torch.profiler's op table.

    python bench/profile_ours.py ppo a [--updates 3] [--torch-ops] [--out DIR]

py-spy comes from bench/.venvs/tools (bash bench/setup_venvs.sh installs it). The job is the
benchmark's own (worker_ours.py, same flags); samples outside the training loop (loading,
tokenizing, saving) are dropped. Output: DIR/profile-ours-<stage>-<model>.md (and printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload as W  # noqa: E402

ROOT = W.BENCH.parent
RLHF = str(ROOT / "rlhf") + "/"
PY_SPY = W.VENVS / "tools" / "bin" / "py-spy"
# Functions whose stacks are training (not setup or the final save).
TRAIN_FUNCS = {"train_loop", "ppo_step", "sample_and_score", "make_experience", "ppo_update", "step_metrics",
              "grpo_step", "grpo_update", "make_group_experience"}


def parse_frame(frame: str) -> tuple[str, str, int]:
    """'func (path:line)' -> (func, path, line)."""
    func, _, rest = frame.rpartition(" (")
    path, _, line = rest.rstrip(")").rpartition(":")
    return func, path, int(line) if line.isdigit() else 0


def source_line(path: str, line: int) -> str:
    try:
        return Path(path).read_text().splitlines()[line - 1].strip()
    except (OSError, IndexError):
        return ""


def short(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def analyse(stacks_file: Path, top: int = 25) -> str:
    ours, leaf, ours_func = Counter(), Counter(), Counter()
    total = train = 0
    for raw in stacks_file.read_text().splitlines():
        stack, _, count = raw.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [parse_frame(f) for f in stack.split(";") if f]
        if not any(func in TRAIN_FUNCS for func, _, _ in frames):
            continue
        train += n
        in_rlhf = [(func, path, line) for func, path, line in frames if path.startswith(RLHF)]
        if in_rlhf:
            func, path, line = in_rlhf[-1]
            ours[(func, path, line)] += n
            ours_func[f"{short(path)}:{func}"] += n
        func, path, line = frames[-1]
        leaf[f"{short(path)}:{func}"] += n
    if not train:
        return f"no training samples in {stacks_file} ({total} samples in all)"
    lines = [f"{train} training samples of {total} (py-spy, 50 Hz).", "",
             "### By the innermost line of rlhf/ on the stack (our line that spent the time)", "",
             "| share | where | line |", "|---|---|---|"]
    for (func, path, line), n in ours.most_common(top):
        lines.append(f"| {n / train:.1%} | {short(path)}:{line} {func} | `{source_line(path, line)}` |")
    lines += ["", "### By our function", "", "| share | function |", "|---|---|"]
    lines += [f"| {n / train:.1%} | {k} |" for k, n in ours_func.most_common(top)]
    lines += ["", "### By the innermost Python function (library code included)", "", "| share | function |", "|---|---|"]
    lines += [f"| {n / train:.1%} | {k} |" for k, n in leaf.most_common(top)]
    return "\n".join(lines)


def torch_ops(job_file: Path, result_file: Path, warmup: int) -> str:
    """Run the job in this process with torch.profiler over the updates after the warm-up."""
    import torch

    import probe as P
    import worker_ours
    from rlhf.trainers import run_logger

    P.configure_threads(W.THREADS)
    job = json.loads(job_file.read_text())
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    state = {"steps": 0}
    original_advance = run_logger.RunLogger.advance

    def advance(self, *args, **kwargs):
        state["steps"] += 1
        if state["steps"] == warmup:
            profiler.start()
        if state["steps"] == job["warmup"] + job["updates"]:
            profiler.stop()
        return original_advance(self, *args, **kwargs)

    run_logger.RunLogger.advance = advance
    from rlhf.cli.main import main as rlhf_main

    rlhf_main(worker_ours.cli_args(job, job["run_dir"]))
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("sft", "rm", "dpo", "ppo", "rm_hh", "dpo_hh", "grpo"))
    parser.add_argument("model", choices=tuple(W.MODELS))
    parser.add_argument("--updates", type=int, default=3, help="updates after one warm-up update")
    parser.add_argument("--batch", type=int, default=W.PPO_BATCH)
    parser.add_argument("--response", type=int, default=W.PPO_RESPONSE)
    parser.add_argument("--torch-ops", action="store_true", help="also run once under torch.profiler (op table)")
    parser.add_argument("--out", default=str(W.RESULTS / "profiles"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    job = {"stage": args.stage, "model": args.model, "warmup": 1, "updates": args.updates}
    if args.stage == "ppo":
        job.update(batch=args.batch, response=args.response)
    if args.stage == "grpo":  # as workload.plan: batch counts responses
        job.update(batch=W.GRPO_PROMPTS * W.GRPO_G, response=W.PPO_RESPONSE)
    name = f"profile-ours-{W.job_id(job)}"
    work = W.RUNS / "profiles"
    work.mkdir(parents=True, exist_ok=True)
    job_file = work / f"{name}.job.json"
    job_file.write_text(json.dumps({**job, "run_dir": str(work / name)}))
    sys.path.insert(0, str(W.BENCH))
    import run as R

    env = R.worker_env()
    if os.getloadavg()[0] > 1.0:
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # as run.py does on a shared machine
    stacks = work / f"{name}.stacks.txt"
    cmd = [str(PY_SPY), "record", "--rate", "50", "--format", "raw", "--full-filenames", "--nonblocking",
           "-o", str(stacks), "--", R.ours_python(), str(W.BENCH / "worker_ours.py"), str(job_file),
           str(work / f"{name}.result.json")]
    t0 = time.time()
    shutil.rmtree(work / name, ignore_errors=True)  # the run folder of a previous profile
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = json.loads((work / f"{name}.result.json").read_text())
    seconds = [round(u["seconds"], 2) for u in result["updates"]]
    text = [f"# Where our time goes: {W.job_id(job)} ({time.strftime('%Y-%m-%d %H:%M')}, "
            f"load average {os.getloadavg()[0]:.1f})", "",
            f"Seconds per update (first is warm-up): {seconds}; wall {time.time() - t0:.0f} s.", "",
            analyse(stacks)]
    if args.torch_ops:
        os.environ.update({k: v for k, v in env.items() if k.startswith(("OMP", "MKL", "HF_", "TOKENIZERS"))})
        shutil.rmtree(work / name, ignore_errors=True)
        table = torch_ops(job_file, work / f"{name}.torch.json", warmup=job["warmup"])
        text += ["", "### torch.profiler, timed updates, ops by self CPU time", "", "```", table, "```"]
    report = "\n".join(text) + "\n"
    (out / f"{name}.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
