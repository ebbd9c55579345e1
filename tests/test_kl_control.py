"""KL controllers: one update by hand, the +-0.2 clip, checkpoint round trip."""

import json

import pytest

from rlhf.kl_control import AdaptiveKLController, FixedKLController


def test_fixed_controller_never_moves():
    ctl = FixedKLController(0.05)
    ctl.update(current_kl=100.0, n_steps=512)
    assert ctl.value == 0.05


def test_adaptive_controller_one_step():
    # e = clip(7/6 - 1, -0.2, 0.2) = 1/6; mult = 1 + (1/6) * 256 / 10000; value = 0.1 * mult
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=7.0, n_steps=256)
    assert ctl.value == pytest.approx(0.1 * (1 + (1 / 6) * 256 / 10000))


@pytest.mark.parametrize(
    "current_kl, mult",
    [
        (60.0, 1 + 0.2 * 256 / 10000),  # 60/6 - 1 = 9, clipped to +0.2
        (0.0, 1 - 0.2 * 256 / 10000),  # 0/6 - 1 = -1, clipped to -0.2
    ],
)
def test_adaptive_controller_clips_error(current_kl, mult):
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=current_kl, n_steps=256)
    assert ctl.value == pytest.approx(0.1 * mult)


def test_state_dict_round_trips_through_json():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    ctl.update(current_kl=7.0, n_steps=256)
    restored = AdaptiveKLController(init_kl_coef=0.5, target=6.0, horizon=10000)
    restored.load_state_dict(json.loads(json.dumps(ctl.state_dict())))
    assert restored.value == ctl.value

    fixed = FixedKLController(0.5)
    fixed.load_state_dict(json.loads(json.dumps(FixedKLController(0.2).state_dict())))
    assert fixed.value == 0.2


def test_adaptive_controller_rejects_bad_target():
    with pytest.raises(ValueError, match="target > 0 and horizon > 0"):
        AdaptiveKLController(init_kl_coef=0.1, target=0.0, horizon=10000)
