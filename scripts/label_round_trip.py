#!/usr/bin/env python
"""The labeling app's round trip on the embedded task, measured (issue 14, "Done when").

    python scripts/label_round_trip.py --sft_model runs/demo/sft/model --data_dir runs/demo/data \
        --work_dir /tmp/round_trip --items 800 --out /tmp/round_trip/results.json

1. ``rlhf label generate``: K = 4 candidates per training prompt from the demo's SFT model, and
   the same for the held-out prompts (prompts_test), whose pairs are labelled by gold: the test set.
2. App path: ``rlhf label init`` (overlap 1), ``rlhf serve``, ``rlhf label simulate`` (five
   simulated labelers, through the HTTP API), ``rlhf label export``.
3. File path: the same simulated labelers (labeler_pool, as the demo's) rank the candidates
   directly into a rankings file, each item by the labeler the app gave it to.
4. Careless: a second project with overlap 2 and hidden gold items, five labelers of which the
   last two judge near coin-flip; the admin report's flags, and ``rlhf rm`` on the export with
   and without its per-label ``weight`` fields (each label: agreement x gold x min(1, k / ramp)).
   The app-vs-file comparison trains on the export without its weights too, since the file path
   has none: it compares the labels, not the weighting.
5. ``rlhf rm`` on each (same options, same steps), held-out accuracy against gold with its
   standard error, and paired differences (both models on the same held-out pairs).

Without ``--sft_model`` it first writes the demo's data and trains the demo's SFT stage
(``--sft_steps``). Every step is the command a user runs, as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

RM_OPTIONS = ["--learning_rate", "2e-4", "--per_device_train_batch_size", "16", "--center_rewards_coefficient", "0.01",
              "--max_length", "192", "--logging_steps", "25", "--report_to", "none", "--disable_tqdm", "true"]


def rlhf(*args, env=None, quiet=False) -> str:
    """Run ``rlhf ...`` as a user would; its stdout (stderr passes through)."""
    cmd = [sys.executable, "-m", "rlhf", *map(str, args)]
    print("$ rlhf " + " ".join(map(str, args)), flush=True)
    result = subprocess.run(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, text=True)
    if not quiet:
        print(result.stdout[-2000:], flush=True)
    if result.returncode != 0:
        raise SystemExit(f"rlhf {args[0]} failed with exit code {result.returncode}")
    return result.stdout


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def without_weights(path: Path) -> Path:
    """A copy of an export without its ``weight`` fields: ``rlhf rm`` then weighs every pair 1."""
    out = path.with_name(path.stem + "_unweighted.jsonl")
    return write_jsonl(out, [{k: v for k, v in r.items() if k != "weight"} for r in read_jsonl(path)])


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def repeated_prompts(src: Path, n: int, out: Path) -> Path:
    """The first ``n`` prompts of ``src`` cycled (the demo has 400 training prompts; each repeat
    gets fresh samples)."""
    prompts = read_jsonl(src)
    return write_jsonl(out, [{"prompt": prompts[i % len(prompts)]["prompt"]} for i in range(n)])


def gold_scores(record: dict) -> list[float]:
    from rlhf.embedded.gold import gold_rewards

    n = len(record["responses"])
    return gold_rewards([record["prompt"]] * n, record["responses"], record.get("ended", [True] * n))


def heldout_pairs(candidates: list[dict]) -> list[dict]:
    """Every pair of a held-out candidate set that gold orders strictly: {prompt, chosen, rejected}."""
    pairs = []
    for record in candidates:
        gold = gold_scores(record)
        for i in range(len(gold)):
            for j in range(i + 1, len(gold)):
                if abs(gold[i] - gold[j]) > 1e-9:
                    better, worse = (i, j) if gold[i] > gold[j] else (j, i)
                    pairs.append({"prompt": record["prompt"], "chosen": record["responses"][better],
                                  "rejected": record["responses"][worse]})
    return pairs


def gold_items(candidates: list[dict]) -> list[dict]:
    """The hidden checks: of each candidate set, the responses with distinct gold rewards (the
    first of each value; gold often ties, and a tie has no right order), with gold's ranking (best
    first); sets left with fewer than two are not used."""
    out = []
    for record in candidates:
        gold = gold_scores(record)
        keep = [i for i, g in enumerate(gold) if all(abs(g - gold[j]) > 1e-9 for j in range(i))]
        if len(keep) >= 2:
            order = sorted(range(len(keep)), key=lambda n: -gold[keep[n]])
            out.append({"prompt": record["prompt"], "responses": [record["responses"][i] for i in keep],
                        "ended": [record["ended"][i] for i in keep], "ranking": order})
    return out


def label_agreement_with_gold(rankings_file: Path) -> tuple[float, float, int]:
    """How often a rankings file orders a pair as gold does, over the pairs gold orders strictly:
    (rate, binomial standard error, pairs). Compares the labels themselves, before any training."""
    agree = total = 0
    for record in read_jsonl(rankings_file):
        gold = gold_scores({**record, "ended": [True] * len(record["responses"])})
        ranking = record["ranking"]
        for a in range(len(ranking)):
            for b in range(a + 1, len(ranking)):
                better, worse = ranking[a], ranking[b]
                if abs(gold[better] - gold[worse]) > 1e-9:
                    total += 1
                    agree += gold[better] > gold[worse]
    rate = agree / total
    return rate, math.sqrt(rate * (1 - rate) / total), total


def file_rankings(candidates: list[dict], labelers: int, seed: int,
                  assigned: dict[tuple, str] | None = None) -> list[dict]:
    """The file-based path: each item ranked directly by a labeler of the demo's pool: the one
    the app handed it to (``assigned``, keyed by prompt and responses), so that both paths have
    the same labeler on every item and differ only in the noise drawn; without it item i goes to
    labeler i mod n."""
    from rlhf.embedded.labelers import labeler_pool
    from rlhf.feedback.labeler import ranking_record

    pool = labeler_pool(labelers, seed=seed)
    by_name = {**{p.name: p for p in pool}, **{f"sim-{p.name}": p for p in pool}}  # the app's names: sim-<name>
    rngs = {p.name: random.Random(f"file-{seed}-{p.name}") for p in pool}
    out = []
    for i, record in enumerate(candidates):
        key = (record["prompt"], tuple(record["responses"]))
        person = by_name[assigned[key]] if assigned and key in assigned else pool[i % len(pool)]
        out.append(ranking_record(person, record["prompt"], record["responses"], rngs[person.name], record["ended"]))
    return out


def app_assignment(rankings_file: Path) -> dict[tuple, str]:
    """Who labelled each item in the app's export: (prompt, responses) -> labeler."""
    return {(r["prompt"], tuple(r["responses"])): r["labeler"] for r in read_jsonl(rankings_file)}


class Server:
    """``rlhf serve`` in the background on a free port until the block ends."""

    def __init__(self, db: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = db

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-m", "rlhf", "serve", "--db", self.db, "--port", str(self.port)])
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{self.url}/healthz", timeout=1).read()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit("rlhf serve exited")
                time.sleep(0.1)
        raise SystemExit("rlhf serve did not answer in 60 s")

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=30)


def admin_token(db: str) -> str:
    out = rlhf("label", "admin-token", "--db", db, quiet=True)
    return out.split("RLHF_ADMIN_TOKEN=")[1].split(")")[0].strip()


def app_labels(work: Path, name: str, candidates: Path, overlap: int, careless: int, seed: int,
               gold: Path | None = None, gold_rate: float = 0.0, reuse: bool = False) -> dict:
    """A project labelled by ``rlhf label simulate`` through a live ``rlhf serve``; its export
    and the admin report."""
    saved = work / f"{name}_labels.json"
    if reuse and saved.is_file():
        return {**json.loads(saved.read_text()), "rankings": work / f"{name}_rankings.jsonl"}
    db = f"sqlite:///{work / (name + '.db')}"
    (work / (name + ".db")).unlink(missing_ok=True)
    init = ["label", "init", "--db", db, "--candidates", candidates, "--overlap", overlap, "--gold_rate", gold_rate]
    rlhf(*init, *(["--gold_items", gold] if gold else []))
    token = admin_token(db)
    with Server(db) as server:
        start = time.time()
        rlhf("label", "simulate", "--url", server.url, "--labelers", 5, "--careless", careless, "--seed", seed,
             env={"RLHF_ADMIN_TOKEN": token})
        seconds = time.time() - start
        request = urllib.request.Request(f"{server.url}/api/admin/report", headers={"Authorization": f"Bearer {token}"})
        report = json.loads(urllib.request.urlopen(request, timeout=60).read())
    out = work / f"{name}_rankings.jsonl"
    printed = rlhf("label", "export", "--db", db, "--output_file", out)
    # The weighted export leaves out the labels of weight 0 (--min_weight): a batch holding only
    # such pairs would have a weighted-mean loss of 0/0.
    rlhf("label", "export", "--db", db, "--output_file", work / f"{name}_rankings_weighted.jsonl", "--min_weight", 1e-6)
    weights = printed.split("labeler weights now (agreement x gold x experience): ")[1].split()[0]
    result = {"report": report, "labeler_weights": weights, "simulate_seconds": round(seconds, 1)}
    saved.write_text(json.dumps(result))
    return {**result, "rankings": out}


def train_rm(work: Path, name: str, sft_model: str, train_file: Path, eval_file: Path, steps: int,
             reuse: bool = False, seed: int = 0) -> dict:
    out = work / (f"rm_{name}" if seed == 0 else f"rm_{name}_seed{seed}")
    if reuse and (out / "summary.json").is_file():
        summary = json.loads((out / "summary.json").read_text())
        return {"model": str(out / "model"), "accuracy": summary["eval/accuracy"],
                "stderr": summary["eval/accuracy_stderr"], "train_pairs": summary.get("train_pairs")}
    rlhf("rm", "--model_name_or_path", sft_model, "--train_file", train_file, "--eval_file", eval_file,
         "--output_dir", out, "--max_steps", steps, "--overwrite_output_dir", "true", "--seed", seed, *RM_OPTIONS,
         quiet=True)
    summary = json.loads((out / "summary.json").read_text())
    return {"model": str(out / "model"), "accuracy": summary["eval/accuracy"],
            "stderr": summary["eval/accuracy_stderr"], "train_pairs": summary.get("train_pairs")}


def correct_on_pairs(model_path: str, pairs: list[dict]) -> list[int]:
    """1 where the reward model scores the gold-better response higher, per held-out pair."""
    import torch

    from rlhf.rewards.scorers import load_reward_model, score_responses

    model, tokenizer, _ = load_reward_model(model_path)
    with torch.no_grad():
        chosen = score_responses(model, tokenizer, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
        rejected = score_responses(model, tokenizer, [p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    return (chosen > rejected).int().tolist()


def paired_difference(a: list[int], b: list[int]) -> tuple[float, float]:
    """mean(b - a) over the same pairs and its standard error (sample std / sqrt(n))."""
    diffs = [y - x for x, y in zip(a, b)]
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    return mean, math.sqrt(var / n)


def sft_model_from_demo(work: Path, steps: int, seed: int) -> tuple[str, Path]:
    """The demo's data and its SFT stage (``steps`` steps), as ``rlhf demo`` runs them."""
    from rlhf.config.base import config_from_dict
    from rlhf.config.sft import SFTConfig
    from rlhf.embedded.task_data import generate_task_data
    from rlhf.pipeline.demo import DemoConfig, stage_options
    from rlhf.trainers import sft

    demo = DemoConfig(output_dir=str(work / "demo"), seed=seed, sft_steps=steps, disable_tqdm=True)
    data = generate_task_data(work / "demo" / "data", seed, demo.num_demonstrations, demo.num_rankings, demo.ranking_k,
                              demonstration_kinds=demo.demonstration_kind_list(), habit_rates=demo.habit_rates())
    options = stage_options(demo, work / "demo", {**data, "rankings_policy": data["rankings_train"]})["sft"]
    sft.run(config_from_dict(SFTConfig, {**options, "overwrite_output_dir": True, "report_to": "none"}))
    return str(work / "demo" / "sft" / "model"), work / "demo" / "data"


def make_candidates(args, work: Path, data_dir: Path, sft_model: str) -> dict[str, Path]:
    """``rlhf label generate`` for the training items, the held-out items and the gold items."""
    generate = ["label", "generate", "--model_name_or_path", sft_model, "--num_responses", args.num_responses,
                "--temperatures", "0.7,1.0,1.3", "--max_new_tokens", 40, "--overwrite_output_dir", "true",
                "--disable_tqdm", "true"]
    sets = {"train": (args.items, args.seed), "heldout": (None, args.seed + 1), "gold": (args.gold_items, args.seed + 2)}
    files = {}
    for name, (n, seed) in sets.items():
        if name == "heldout":
            count = len(read_jsonl(data_dir / "prompts_test.jsonl")) * args.heldout_repeats
            source = repeated_prompts(data_dir / "prompts_test.jsonl", count, work / "prompts_heldout.jsonl")
        else:
            source = repeated_prompts(data_dir / "prompts_train.jsonl", n, work / f"prompts_{name}.jsonl")
        files[name] = work / f"candidates_{name}.jsonl"
        if not (args.reuse and files[name].is_file()):
            rlhf(*generate, "--prompts_file", source, "--output_file", files[name], "--seed", seed)
    return files


def careless_experiment(args, work: Path, files: dict, gold_file: Path, sft_model: str, eval_file: Path,
                        pairs: list[dict], steps: int, results: dict, timings: dict) -> None:
    """Two careless labelers of five, overlap 2, hidden gold items: the admin report's flags and
    weights, then ``rlhf rm`` on the export unweighted and weighted; fills ``results``."""
    t = time.time()
    careless = app_labels(work, "careless", files["train"], overlap=2, careless=2, seed=args.seed, gold=gold_file,
                          gold_rate=0.1, reuse=args.reuse)
    timings["careless_labels"] = round(time.time() - t, 1)
    results["careless_report"] = {row["name"]: {k: row.get(k) for k in ("labels", "kappa", "gold_accuracy", "weight",
                                                                         "flags")}
                                  for row in careless["report"]["labelers"]}
    results["alpha"] = careless["report"].get("alpha")
    results["flagged"] = sorted(row["name"] for row in careless["report"]["labelers"] if row["flags"])
    results["labeler_weights"] = careless["labeler_weights"]
    weighted_file = work / "careless_rankings_weighted.jsonl"
    correct = {}
    for name, rankings in (("unweighted", without_weights(careless["rankings"])), ("weighted", weighted_file)):
        t = time.time()
        results[name] = train_rm(work, name, sft_model, rankings, eval_file, steps, reuse=args.reuse)
        timings[f"rm_{name}"] = round(time.time() - t, 1)
        correct[name] = correct_on_pairs(results[name]["model"], pairs)
    results["weighted_minus_unweighted"] = paired_difference(correct["unweighted"], correct["weighted"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sft_model", default="", help="the demo's SFT model; empty: train it (--sft_steps)")
    parser.add_argument("--data_dir", default="", help="the demo's data folder (prompts_train/test.jsonl)")
    parser.add_argument("--sft_steps", type=int, default=300)
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--items", type=int, default=800, help="training candidate sets (K responses each)")
    parser.add_argument("--heldout_repeats", type=int, default=2, help="candidate sets per held-out prompt")
    parser.add_argument("--gold_items", type=int, default=120, help="candidate sets drawn for the hidden gold items")
    parser.add_argument("--num_responses", type=int, default=4)
    parser.add_argument("--rm_epochs", type=float, default=1.0, help="rm steps = epochs x pairs of the overlap-1 file / 16")
    parser.add_argument("--careless_only", action="store_true", help="skip the file-vs-app comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rm_seeds", type=lambda text: [int(x) for x in text.split(",")], default=[0],
                        help="comma list: `rlhf rm --seed` of each file/app reward model pair")
    parser.add_argument("--reuse", action="store_true", help="keep what an earlier run in work_dir finished "
                        "(candidates, labelled projects, trained reward models)")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    timings = {}
    start = time.time()
    if args.sft_model:
        sft_model, data_dir = args.sft_model, Path(args.data_dir)
    else:
        sft_model, data_dir = sft_model_from_demo(work, args.sft_steps, args.seed)
        timings["sft"] = round(time.time() - start, 1)

    # 1. Candidates from the SFT model: training items, held-out items (gold-labelled pairs), gold checks.
    t = time.time()
    files = make_candidates(args, work, data_dir, sft_model)
    timings["generate"] = round(time.time() - t, 1)
    train = read_jsonl(files["train"])
    pairs = heldout_pairs(read_jsonl(files["heldout"]))
    eval_file = write_jsonl(work / "heldout_pairs.jsonl", pairs)
    gold_file = write_jsonl(work / "gold_items.jsonl", gold_items(read_jsonl(files["gold"])))
    steps = max(1, round(args.rm_epochs * len(train) * args.num_responses * (args.num_responses - 1) / 2 / 16))
    results = {"items": len(train), "heldout_pairs": len(pairs), "rm_steps": steps,
               "gold_items": len(read_jsonl(gold_file)), "sft_model": sft_model}

    # 2-3. File path vs app path, the same five careful labelers, overlap 1.
    correct = {}
    if not args.careless_only:
        t = time.time()
        app = app_labels(work, "app", files["train"], overlap=1, careless=0, seed=args.seed, reuse=args.reuse)
        timings["app_labels"] = round(time.time() - t, 1)
        # The app hands items to whichever labeler asks first; the file path gives each item to the
        # same labeler, so the two differ only in the labelers' noise draws and the pairs' order.
        file_path = write_jsonl(work / "file_rankings.jsonl",
                                file_rankings(train, 5, args.seed, app_assignment(app["rankings"])))
        # Each path trains one reward model per --rm_seeds seed (batch order): a paired difference per
        # seed, and their mean, whose spread across seeds includes the reward model's training noise.
        differences = []
        for rm_seed in args.rm_seeds:
            for name, rankings in (("file", file_path), ("app", without_weights(app["rankings"]))):
                t = time.time()
                key = name if rm_seed == args.rm_seeds[0] else f"{name}_seed{rm_seed}"
                results[key] = train_rm(work, name, sft_model, rankings, eval_file, steps, args.reuse, rm_seed)
                timings[f"rm_{key}"] = round(time.time() - t, 1)
                correct[name] = correct_on_pairs(results[key]["model"], pairs)
            differences.append(paired_difference(correct["file"], correct["app"]))
        results["app_minus_file"] = differences[0]
        results["app_minus_file_by_rm_seed"] = dict(zip(args.rm_seeds, differences))
        if len(differences) > 1:
            means = [d[0] for d in differences]
            mean = sum(means) / len(means)
            spread = math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1) / len(means))
            results["app_minus_file_mean"] = (mean, spread)
        results["label_agreement_with_gold"] = {"file": label_agreement_with_gold(file_path),
                                                "app": label_agreement_with_gold(app["rankings"])}
        results["app_simulate_seconds"] = app["simulate_seconds"]

    # 4. Two careless labelers of five, overlap 2, hidden gold items: flags, then weighted vs unweighted.
    careless_experiment(args, work, files, gold_file, sft_model, eval_file, pairs, steps, results, timings)
    results["timings_s"] = timings
    results["total_s"] = round(time.time() - start, 1)
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
