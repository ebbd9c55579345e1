#!/usr/bin/env python
"""How far AI labels can be trusted: a judge's agreement with gold (embedded task) or with the
human label (HH-RLHF), its position bias, and the simulated people's agreement with gold.

    # embedded task: comparisons of the task's test rankings (people's labels), gold from the rubric
    python scripts/measure_ai_judges.py embedded --judge /tmp/smollm2 --num_pairs 500 --out /tmp/h9/embedded.json
    # HH-RLHF harmless-base test comparisons: agreement with the human label
    python scripts/measure_ai_judges.py hh --judge /tmp/smollm2 --num_pairs 300 --out /tmp/h9/hh.json
    # critique-and-revision (rlhf ai revise) on the embedded task: gold of revisions against first responses
    python scripts/measure_ai_judges.py revisions --critiques runs/revise/critiques.jsonl --out /tmp/h9/revise.json

Each pair is shown with its two responses in a seeded random order (so the slot says nothing
about the label), asked in both orders, and scored twice: "drop" (a pair whose verdict flips
with the order gives no label: the library's default) and "average" (Lee et al. 2023: the mean
of the two orders decides). Agreement is over the labelled pairs, with a binomial standard error.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from rlhf.feedback.constitution import load_constitution
from rlhf.feedback.judges import JudgeStats, LocalJudge, combine_orders, pair_queries, proportion_stderr


def embedded_pairs(seed: int) -> list[dict]:
    """The embedded task's test comparisons (one labeler's choice each) with gold's label."""
    from rlhf.embedded.gold import gold_reward
    from rlhf.embedded.task_data import generate_task_data

    root = Path(f"/tmp/h9/task_data_{seed}")
    files = generate_task_data(root, seed=seed, num_demonstrations=10, num_rankings=10)
    pairs = []
    for line in Path(files["comparisons_test"]).read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        g_c, g_r = gold_reward(r["prompt"], r["chosen"], True), gold_reward(r["prompt"], r["rejected"], True)
        if g_c != g_r:  # gold has an opinion
            pairs.append({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
                          "people_agree": g_c > g_r, "labeler": r.get("labeler")})
    return pairs  # "chosen" is the person's choice; gold_better tells whether gold agrees


def hh_pairs() -> list[dict]:
    """HH-RLHF harmless-base test comparisons (prompt, chosen = the human's choice, rejected)."""
    from rlhf.data.formats import load_comparisons

    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
    return [{"prompt": c.prompt, "chosen": c.chosen, "rejected": c.rejected}
            for c in load_comparisons(path, skip_bad_records=True)]


def measure(judge, pairs: list[dict], reference: str, seed: int) -> dict:
    """Ask ``judge`` every pair in both orders; agreement of its label with ``reference``'s side."""
    constitution = load_constitution()
    rng = random.Random(f"measure-{seed}")
    asked, queries = [], []
    for pair in pairs:
        a_is_chosen = rng.random() < 0.5
        a, b = (pair["chosen"], pair["rejected"]) if a_is_chosen else (pair["rejected"], pair["chosen"])
        if reference == "gold" and not pair["people_agree"]:
            a_is_chosen = not a_is_chosen  # gold prefers the person's rejected response
        queries += pair_queries(constitution.draw(rng), pair["prompt"], a, b)
        asked.append(a_is_chosen)  # True: the reference prefers a
    start = time.time()
    answers = judge.judge(queries)
    seconds = time.time() - start
    result = {"pairs": len(pairs), "seconds": round(seconds, 1)}
    for mode, keep in (("drop", False), ("average", True)):
        stats, agree, labelled = JudgeStats(), 0, 0
        for n, ref_a in enumerate(asked):
            verdict = combine_orders(answers[2 * n], answers[2 * n + 1], keep)
            stats.add(verdict, answers[2 * n], answers[2 * n + 1])
            if verdict.label is not None:
                labelled += 1
                agree += (verdict.label == 0) == ref_a
        p, se = proportion_stderr(agree, labelled)
        result[mode] = {"agreement": p, "agreement_stderr": se, "labelled": labelled, **stats.summary()}
    # a single order (a, b) only, as a judge asked once would answer
    single = sum((answers[2 * n] > 0.5) == ref_a for n, ref_a in enumerate(asked))
    result["single_order_agreement"], result["single_order_stderr"] = proportion_stderr(single, len(asked))
    return result


def revisions(critiques: Path) -> dict:
    """Gold of each revision against its first response, paired by prompt (revision - first)."""
    from rlhf.embedded.gold import gold_reward

    steps = [json.loads(line) for line in critiques.read_text(encoding="utf-8").splitlines()]
    first = [gold_reward(s["prompt"], s["response"], True) for s in steps]
    revised = [gold_reward(s["prompt"], s["revision"], True) for s in steps]
    diffs = [r - f for r, f in zip(revised, first)]
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else float("nan")
    better, _ = proportion_stderr(sum(d > 0 for d in diffs), n)
    worse, _ = proportion_stderr(sum(d < 0 for d in diffs), n)
    return {"prompts": n, "gold_first": sum(first) / n, "gold_revision": sum(revised) / n,
            "gold_diff": mean, "gold_diff_stderr": (var / n) ** 0.5, "revision_better": better, "revision_worse": worse,
            "examples": steps[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=["embedded", "hh", "revisions"])
    parser.add_argument("--judge", default="", help="local model folder")
    parser.add_argument("--critiques", default="", help="critiques.jsonl of rlhf ai revise (task revisions)")
    parser.add_argument("--num_pairs", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cot_max_new_tokens", type=int, default=0,
                        help="chain-of-thought: reason this many tokens before the verdict (0: off)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.task == "revisions":
        result = revisions(Path(args.critiques))
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return
    pairs = embedded_pairs(args.seed) if args.task == "embedded" else hh_pairs()
    out = {"task": args.task, "judge": args.judge, "available_pairs": len(pairs)}
    if args.task == "embedded":
        people, se = proportion_stderr(sum(p["people_agree"] for p in pairs), len(pairs))
        out["people_agreement_with_gold"], out["people_agreement_stderr"] = people, se
    pairs = random.Random(args.seed).sample(pairs, min(args.num_pairs, len(pairs)))
    if args.task == "embedded":
        out["people_agreement_on_sample"] = proportion_stderr(sum(p["people_agree"] for p in pairs), len(pairs))
    judge = LocalJudge(args.judge, batch_size=args.batch_size, cot_max_new_tokens=args.cot_max_new_tokens)
    out["judge_result"] = measure(judge, pairs, "gold" if args.task == "embedded" else "human", args.seed)
    if args.cot_max_new_tokens:
        out["cot_max_new_tokens"], out["reasonings_first_4"] = args.cot_max_new_tokens, judge.reasonings[:4]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
