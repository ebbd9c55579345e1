"""Our trainers against Hugging Face TRL on identical work, in one command.

    python bench/run.py --repeats 3            # the full benchmark (see bench/README.md for timings)
    python bench/run.py --quick                # 1 warm-up + 2 timed updates, model a, 1 repeat

Each job (stage x model, plus the PPO scaling shapes) runs once per library per repeat, each in
its own subprocess and venv: ours in /work/main/.venv, TRL in bench/.venvs/trl116 (SFT, RM, DPO)
or bench/.venvs/trl112 (PPO). The two libraries alternate (ours first on even repeats, TRL first
on odd ones). Raw per-update results go to <out>/raw/, the tables to <out>/results.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402
import workload as W  # noqa: E402

ROOT = W.BENCH.parent
STAGES = ("sft", "rm", "dpo", "ppo", "rm_hh", "dpo_hh", "grpo")


def ours_python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def trl_python(stage: str) -> str:
    return str(W.VENVS / W.TRL_VENV["ppo" if stage == "ppo" else "other"] / "bin" / "python")


OMP_WAIT_POLICY: str | None = None  # set by main(): "PASSIVE" on a loaded machine (see --omp-wait-policy)


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    if OMP_WAIT_POLICY:
        env["OMP_WAIT_POLICY"] = OMP_WAIT_POLICY
    env.update({
        "OMP_NUM_THREADS": str(W.THREADS), "MKL_NUM_THREADS": str(W.THREADS), "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "PYTHONHASHSEED": str(W.SEED), "CUDA_VISIBLE_DEVICES": "",
    })
    env.pop("PYTHONPATH", None)
    return env


def check_venvs(stages: list[str]) -> None:
    needed = {trl_python(s) for s in stages}
    missing = [p for p in needed if not Path(p).exists()]
    if missing:
        sys.exit(f"missing TRL venv(s): {', '.join(missing)}\nrun: bash bench/setup_venvs.sh")


def git_state() -> dict:
    """Which code of ours was measured (read-only git queries)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    diff = git("diff", "HEAD", "--", "rlhf")
    return {"commit": git("rev-parse", "HEAD"), "rlhf_dirty": bool(diff),
            "rlhf_diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:12] if diff else None,
            "rlhf_untracked": [p for p in git("status", "--porcelain", "--", "rlhf").splitlines() if p.startswith("??")]}


def measure_peak() -> dict:
    out = subprocess.run([ours_python(), str(W.BENCH / "peak.py")], capture_output=True, text=True, env=worker_env())
    if out.returncode:
        print(out.stderr, file=sys.stderr)
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_worker(lib: str, job: dict, repeat: int, out_dir: Path, timeout: int) -> dict:
    name = f"{W.job_id(job)}-{lib}-r{repeat}"
    runs = W.RUNS / out_dir.name
    run_dir = runs / name
    shutil.rmtree(run_dir, ignore_errors=True)
    (runs / "logs").mkdir(parents=True, exist_ok=True)
    job_file, result_file = runs / f"{name}.job.json", out_dir / "raw" / f"{name}.json"
    job_file.write_text(json.dumps({**job, "run_dir": str(run_dir)}))
    python = ours_python() if lib == "ours" else trl_python(job["stage"])
    script = W.BENCH / ("worker_ours.py" if lib == "ours" else "worker_trl.py")
    env = worker_env()
    load_before = os.getloadavg()
    t0 = time.time()
    with open(runs / "logs" / f"{name}.log", "w") as log:
        try:
            code = subprocess.run([python, str(script), str(job_file), str(result_file)], stdout=log, stderr=log,
                                  env=env, cwd=ROOT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.time() - t0
    omp = {k: env.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints and saved models are not needed
    info = {"name": name, "exit_code": code, "wall_s": round(wall, 1), "load_before": load_before,
            "load_after": os.getloadavg(), "omp": omp, "log": str(runs / "logs" / f"{name}.log")}
    if code != 0 or not result_file.exists():
        print(f"  FAILED {name} ({code}); see {info['log']}", flush=True)
        return info
    result = json.loads(result_file.read_text())
    result["run"] = info
    result["repeat"] = repeat
    result_file.write_text(json.dumps(result, indent=1))
    timed = [u["seconds"] for u in result["updates"][job["warmup"]:]]
    median = sorted(timed)[len(timed) // 2] if timed else float("nan")
    print(f"  {name:28s} median {median:8.2f} s/update  (wall {wall:6.0f} s, load {load_before[0]:.1f})", flush=True)
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs of every job per library")
    parser.add_argument("--quick", action="store_true",
                        help="development mode: 1 warm-up + 2 timed updates, model a only, 1 repeat unless --repeats")
    parser.add_argument("--models", default=None, help="comma list of a,b (default a,b; --quick: a)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {','.join(STAGES)}")
    parser.add_argument("--no-scaling", action="store_true", help="skip the PPO response-length and batch sweep")
    parser.add_argument("--scaling-model", default="a", help="model of the PPO sweep")
    parser.add_argument("--options", action="store_true",
                        help="also time our PPO with a shared value head, with LoRA, and with both (ours only)")
    parser.add_argument("--option-names", default=None,
                        help=f"with --options, only these (comma list of {','.join(W.PPO_OPTIONS)})")
    parser.add_argument("--libs", default="ours,trl")
    parser.add_argument("--out", default=None, help="results folder (default bench/results/<full|quick>-<time>)")
    parser.add_argument("--timeout", type=int, default=5400, help="seconds allowed per worker run")
    parser.add_argument("--omp-wait-policy", choices=("auto", "active", "passive"), default="auto",
                        help="OpenMP threads spin (active, the default of torch's OpenMP) or sleep (passive) while "
                        "waiting. On a machine whose CPUs other jobs are using, spinning threads wait on descheduled "
                        "ones and 2-thread training runs ~5x slower than 1 thread; auto = passive when the 1-minute "
                        "load average is above 1 at start, else the library default. Both libraries get the same.")
    args = parser.parse_args()
    global OMP_WAIT_POLICY
    if args.omp_wait_policy == "passive" or (args.omp_wait_policy == "auto" and os.getloadavg()[0] > 1.0):
        OMP_WAIT_POLICY = "PASSIVE"
    elif args.omp_wait_policy == "active":
        OMP_WAIT_POLICY = "ACTIVE"
    if args.quick and "--repeats" not in sys.argv:
        args.repeats = 1
    models = (args.models or ("a" if args.quick else "a,b")).split(",")
    stages = args.stages.split(",")
    unknown = sorted(set(stages) - set(STAGES)) + sorted(set(models) - set(W.MODELS))
    if unknown:
        parser.error(f"unknown stage or model: {', '.join(unknown)}")
    libs = args.libs.split(",")
    if "trl" in libs:
        check_venvs(stages)
    out_dir = Path(args.out) if args.out else W.RESULTS / f"{'quick' if args.quick else 'full'}-{time.strftime('%Y%m%d-%H%M%S')}"
    (out_dir / "raw").mkdir(parents=True, exist_ok=True)

    needed_models = sorted(set(models) | ({args.scaling_model} if "ppo" in stages and not args.no_scaling else set()))
    subprocess.run([ours_python(), str(W.BENCH / "prepare.py"), "--models", ",".join(needed_models)], check=True,
                   env=worker_env(), stdout=subprocess.DEVNULL)
    jobs = W.plan(args.quick, models, stages, not args.no_scaling, args.scaling_model, args.options)
    if args.option_names:
        jobs = [j for j in jobs if j.get("option") in (None, *args.option_names.split(","))]
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:], "quick": args.quick,
            "repeats": args.repeats, "libs": libs, "jobs": jobs, "machine": {
                "cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                "load_at_start": os.getloadavg(), "omp_wait_policy": OMP_WAIT_POLICY or "default"},
            "git": git_state(), "peak_before": measure_peak(), "peaks": [], "runs": []}
    print(f"{len(jobs)} jobs x {len(libs)} libraries x {args.repeats} repeats -> {out_dir}", flush=True)
    print(f"fp32 matmul peak ({W.THREADS} threads): {meta['peak_before'].get('peak_gflops', float('nan')):.1f} GFLOP/s",
          flush=True)
    t0 = time.time()
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats}", flush=True)
        for job in jobs:
            # The peak is re-measured before every job: on a shared machine the best of them is the
            # closest to what the CPUs can do, and MFU divides by that best.
            meta["peaks"].append(measure_peak())
            for lib in (libs if repeat % 2 == 0 else libs[::-1]):
                if job.get("option") and lib != "ours":
                    continue  # an option of ours: not identical work, nothing of TRL's to set beside it
                meta["runs"].append(run_worker(lib, job, repeat, out_dir, args.timeout))
                (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    meta["peak_after"] = measure_peak()
    meta["machine"]["load_at_end"] = os.getloadavg()
    meta["wall_s"] = round(time.time() - t0, 1)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    report.build(out_dir)
    print(f"done in {meta['wall_s'] / 60:.1f} min: {out_dir / 'results.md'}", flush=True)
    return 0 if all(r["exit_code"] == 0 for r in meta["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
