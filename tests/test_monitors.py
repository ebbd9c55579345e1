"""Reward-hacking monitors: each fires on a constructed trajectory and stays quiet on a healthy
one (hand-made numbers, arithmetic in comments); the watcher warns once with the step and the
number, stops only when asked, survives a checkpoint; PPO logs them and stops cleanly on one."""

import json
import warnings
from pathlib import Path

import pytest

from rlhf.config.base import ConfigError, parse_config
from rlhf.config.monitors import MONITOR_NAMES
from rlhf.config.ppo import PPOConfig
from rlhf.trainers.monitors import (MONITORS, MonitorWatcher, end_falling, entropy_collapse, kl_acceleration,
                                    length_drift, negative_kl, proxy_gold_gap)


def test_config_and_trainer_name_the_same_monitors():
    assert MONITOR_NAMES == MONITORS


def test_length_drift():
    # baseline mean of the first 5 = 10; recent (last 5) = (14+15+16+17+18)/5 = 16; |16/10 - 1| = 0.6
    assert length_drift([10] * 5 + [14, 15, 16, 17, 18]) == pytest.approx(0.6)
    # healthy: recent (10+11+10+9+10)/5 = 10 -> 0
    assert length_drift([10, 10, 11, 9, 10, 10, 11, 10, 9, 10]) == pytest.approx(0.0)
    # shrinking counts too: 10 -> 4 is |0.4 - 1| = 0.6
    assert length_drift([10] * 5 + [4] * 5) == pytest.approx(0.6)
    assert length_drift([10] * 9) is None  # windows would overlap


def test_end_falling():
    # baseline (0.9+0.95+0.9+0.85+0.9)/5 = 0.9; recent (0.7+0.6+0.7+0.6+0.65)/5 = 0.65; drop 0.25
    assert end_falling([0.9, 0.95, 0.9, 0.85, 0.9, 0.7, 0.6, 0.7, 0.6, 0.65]) == pytest.approx(0.25)
    assert end_falling([0.9] * 10) == pytest.approx(0.0)
    assert end_falling([0.5] * 5 + [0.9] * 5) == pytest.approx(-0.4)  # ending more often is no warning


def test_entropy_collapse():
    # baseline 2.0; recent (0.8+0.9+0.8+0.7+0.8)/5 = 0.8; 1 - 0.8/2 = 0.6
    assert entropy_collapse([2.0] * 5 + [0.8, 0.9, 0.8, 0.7, 0.8]) == pytest.approx(0.6)
    # healthy: recent (1.9+1.8+1.9+1.8+1.6)/5 = 1.8; 1 - 1.8/2 = 0.1
    assert entropy_collapse([2.0] * 5 + [1.9, 1.8, 1.9, 1.8, 1.6]) == pytest.approx(0.1)


def test_kl_acceleration():
    # window 2: steady growth, means m1 = 0.25, m2 = 1.25, m3 = 2.25: (2.25-1.25)/(1.25-0.25) = 1
    assert kl_acceleration([0, 0.5, 1, 1.5, 2, 2.5], window=2) == pytest.approx(1.0)
    # speeding up: m3 = (4+6)/2 = 5; (5-1.25)/1 = 3.75
    assert kl_acceleration([0, 0.5, 1, 1.5, 4, 6], window=2) == pytest.approx(3.75)
    # a flat start is floored at 0.05 nats/step x 2 steps = 0.1: m = 0, 0, 0.1 -> 0.1/0.1 = 1, not infinity
    assert kl_acceleration([0, 0, 0, 0, 0.1, 0.1], window=2) == pytest.approx(1.0)
    assert kl_acceleration([0, 1, 2, 3, 4], window=2) is None


def test_proxy_gold_gap():
    # window 2: gold running means .55 .65 .70 .65 .55 .45 peak .70 (3rd); proxy's there .5, now 1.1 (rose):
    # gap = .70 - .45 = .25
    proxy = [0, .2, .4, .6, .8, 1.0, 1.2]
    assert proxy_gold_gap(proxy, [.5, .6, .7, .7, .6, .5, .4], window=2) == pytest.approx(0.25)
    assert proxy_gold_gap(proxy, [.5, .55, .6, .65, .7, .75, .8], window=2) == pytest.approx(0.0)  # gold tracks
    falling = [1, .9, .8, .7, .6, .5, .4]  # both fall: a worse run, not a hacked reward
    assert proxy_gold_gap(falling, [.5, .6, .7, .7, .6, .5, .4], window=2) == 0.0
    assert proxy_gold_gap(proxy, [], window=2) is None  # no gold function


def test_negative_kl():
    # window 3: (-0.3 - 0.2 - 0.1)/3 = -0.2
    assert negative_kl([0.01, -0.02, -0.3, -0.2, -0.1], window=3) == pytest.approx(-0.2)
    assert negative_kl([0.0, 0.1, 0.3, 0.2, 0.4], window=3) == pytest.approx(0.3)


def hacked_run(steps=15):
    """A run going wrong in every way from step 8 on, and the same run healthy."""
    hacked, healthy = [], []
    for step in range(1, steps + 1):
        bad = step >= 8
        hacked.append({"response/length": 20.0 if bad else 10.0, "response/ended_frac": 0.5 if bad else 0.9,
                       "policy/entropy": 0.5 if bad else 2.0, "objective/kl": 0.1 * step + (step - 7) ** 2 * bad,
                       "objective/scores": 0.1 * step, "gold/score": 0.8 - 0.05 * step * bad,
                       "objective/kl_k1": -0.5 if bad else 0.0})
        healthy.append({"response/length": 10.0 + step % 2, "response/ended_frac": 0.9, "policy/entropy": 2.0 - 0.01 * step,
                        "objective/kl": 0.1 * step, "objective/scores": 0.1 * step, "gold/score": 0.5 + 0.01 * step,
                        "objective/kl_k1": 0.1 * step})
    return hacked, healthy


def watch(trajectory, **kwargs):
    watcher = MonitorWatcher(**kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logged = [watcher.observe(step, metrics) for step, metrics in enumerate(trajectory, 1)]
    return watcher, logged, [str(w.message) for w in caught]


def test_each_monitor_fires_on_the_hacked_run_and_none_on_the_healthy_one():
    hacked, healthy = hacked_run()
    watcher, logged, messages = watch(hacked)
    assert sorted(watcher.events) == sorted(MONITORS)
    assert len(messages) == len(MONITORS)  # once each, not every step
    # length: baseline 10; at step 10 the last 5 (steps 6-10) are 10,10,20,20,20 -> mean 16 -> |16/10 - 1| = 0.6
    assert watcher.events["length_drift"].first_step == 10
    assert watcher.events["length_drift"].first_value == pytest.approx(0.6)
    assert any(m.startswith("monitor length_drift at step 10: mean response length moved by 60%") for m in messages)
    assert logged[9]["monitor/length_drift"] == pytest.approx(0.6)
    assert "monitor/length_drift" not in logged[8]  # step 9: windows still overlap
    # negative k1: from step 8 the last 5 are 0,0,0,0,-0.5 -> mean -0.1 < -0.01
    assert (watcher.events["negative_kl"].first_step, watcher.events["negative_kl"].first_value) == (8, -0.1)
    assert watcher.summary()["stopped_by_monitor"] is None

    watcher, logged, messages = watch(healthy)
    assert messages == [] and watcher.summary() == {"monitors": {}, "stopped_by_monitor": None}
    assert set(logged[-1]) == {f"monitor/{name}" for name in MONITORS}


def test_stop_on_and_thresholds():
    hacked, _ = hacked_run()
    watcher, _, messages = watch(hacked, stop_on=["length_drift"], thresholds={"length_drift": 0.7})
    # threshold 0.7: step 10's 0.6 is quiet; step 11's last 5 are 10,20,20,20,20 -> 18 -> 0.8 fires
    assert watcher.stop_reason == "length_drift at step 11: mean response length moved by 80% from the first steps"
    assert any("stopping the run as monitor_stop_on asks" in m for m in messages)
    with pytest.raises(ValueError, match="unknown monitors"):
        MonitorWatcher(stop_on=["length"])


def test_watcher_state_survives_a_checkpoint():
    hacked, _ = hacked_run()
    whole, logged_whole, _ = watch(hacked)
    first, _, _ = watch(hacked[:9])
    resumed = MonitorWatcher(warn=False)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    logged_rest = [resumed.observe(step, m) for step, m in enumerate(hacked[9:], 10)]
    assert logged_rest == logged_whole[9:]
    assert resumed.summary() == whole.summary()


def test_monitor_options_are_checked():
    base = ["--model_name_or_path", "m", "--prompts_file", "p", "--reward_function", "f:g"]
    with pytest.raises(ConfigError, match="monitor_stop_on: unknown monitor 'length'"):
        parse_config(PPOConfig, [*base, "--monitor_stop_on", "length"])
    with pytest.raises(ConfigError, match="monitor_thresholds: expected name=value, got 'kl'"):
        parse_config(PPOConfig, [*base, "--monitor_thresholds", "kl"])
    config = parse_config(PPOConfig, [*base, "--monitor_stop_on", "all", "--monitor_thresholds", "end_falling=0.2"])
    assert config.monitor_stop_list() == list(MONITOR_NAMES)
    assert config.monitor_threshold_values() == {"end_falling": 0.2}


def test_ppo_logs_the_monitors_and_stops_cleanly_on_one(tiny_model_dir, toy_data, tmp_path):
    """kl_acceleration with 1-step windows: on this seed the tiny policy's KL jumps at step 4 (5.7x
    its earlier slope); the run stops there with its model saved and says why in the summary."""
    from rlhf.trainers import ppo

    config = parse_config(PPOConfig, [
        "--model_name_or_path", str(tiny_model_dir), "--prompts_file", str(toy_data["prompts"]),
        "--reward_function", "reward_functions:target_char_rate", "--output_dir", str(tmp_path), "--max_steps", "5",
        "--rollout_batch_size", "8", "--per_device_train_batch_size", "8", "--ppo_epochs", "2", "--max_new_tokens",
        "6", "--learning_rate", "3e-3", "--disable_tqdm", "true", "--report_to", "none", "--monitor_window", "1",
        "--monitor_baseline_steps", "1", "--monitor_stop_on", "kl_acceleration", "--seed", "42"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = ppo.run(config)
    rows = [json.loads(line) for line in (Path(tmp_path) / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "objective/kl" in r]
    assert "monitor/length_drift" not in train_rows[0] and "monitor/length_drift" in train_rows[1]
    assert "monitor/kl_acceleration" not in train_rows[1] and "monitor/kl_acceleration" in train_rows[2]
    assert "objective/kl_k1" in train_rows[0]
    stop = summary["stopped_by_monitor"]
    assert stop.startswith("kl_acceleration at step 4: the KL to the reference grows ")
    assert summary["steps"] == 4 == len(train_rows)
    assert summary["monitors"]["kl_acceleration"]["first_step"] == 4
    assert train_rows[3]["monitor/kl_acceleration"] > 2
    assert any(str(w.message).startswith("monitor kl_acceleration at step 4:") for w in caught)
    assert (Path(tmp_path) / "model" / "model.safetensors").is_file()
    assert json.loads((Path(tmp_path) / "summary.json").read_text())["stopped_by_monitor"] == stop
