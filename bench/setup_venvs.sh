#!/usr/bin/env bash
# Create the benchmark's separate virtual environments under bench/.venvs/ (git-ignored).
# TRL is not a dependency of ours: it lives only here.
#   trl116  TRL 1.16.0 (SFTTrainer, RewardTrainer, DPOTrainer)
#   trl112  TRL 1.12.0 (the last release with PPO: trl.experimental.ppo.PPOTrainer)
#   tools   py-spy, for bench/profile_ours.py
# Every install is constrained by constraints.txt (torch==2.13.0, the local CPU build) and
# checked with --dry-run first, so a bare torch requirement can never pull GB of CUDA wheels;
# transformers and the rest are left to pip's resolver in each venv.
set -euo pipefail
cd "$(dirname "$0")/.."
CONSTRAINTS=constraints.txt
PYTHON=${PYTHON:-python3}

make_venv() {  # name, packages...
  local name=$1; shift
  local venv=bench/.venvs/$name
  if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv"
  fi
  echo "== $name: pip install --dry-run -c $CONSTRAINTS $*"
  local plan
  plan=$("$venv/bin/pip" install --dry-run -c "$CONSTRAINTS" "$@" 2>&1 | grep -E '^(Would install|ERROR)' || true)
  echo "$plan"
  if echo "$plan" | grep -qiE 'nvidia|cuda|triton|ERROR'; then
    echo "refusing to install: the plan pulls CUDA packages or failed" >&2
    exit 1
  fi
  "$venv/bin/pip" install -q -c "$CONSTRAINTS" "$@"
}

make_venv trl116 "trl==1.16.0" torch
make_venv trl112 "trl==1.12.0" torch
make_venv tools "py-spy==0.4.3"
for v in trl116 trl112; do
  bench/.venvs/$v/bin/python -c "import trl, transformers, torch; print('$v: trl', trl.__version__, '| transformers', transformers.__version__, '| torch', torch.__version__)"
done
