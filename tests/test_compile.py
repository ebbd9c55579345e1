"""`--torch_compile true`: the compiled PPO forward/backward gives eager's numbers (to float
tolerance), one graph serves every rollout shape (dynamic shapes), the option is validated,
and a killed-and-resumed compiled run ends bit-identical to an uninterrupted compiled one."""

import copy
import shutil
import signal

import pytest
import torch

from ppo_fixtures import fixed_length_experience, ppo_config
from test_resume import assert_same_run, run, stage_args, start_and_signal

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="inductor on CPU needs g++")


def _minibatch(exp, rows):
    rollout = exp.samples.rollout
    return rollout.query_responses[rows], rollout.attention_mask[rows], rollout.prompt_length


@pytest.mark.slow  # ~3 min on 2 loaded cores, nearly all of it inductor compiling forward and backward
def test_compiled_forward_backward_and_update_match_eager(tiny_model_dir, toy_data):
    """Logits, values and every gradient of one forward/backward agree with eager, then one PPO
    update (4 minibatches of 2) gives the same losses and the same updated weights. A compiled
    graph that dropped the temperature, the value head or a response position would differ by
    far more than 1e-4."""
    from rlhf.trainers.compile import compile_counters, compile_module, reset_counters
    from rlhf.trainers.optim import NonFiniteGuard, make_scheduler
    from rlhf.trainers.ppo import ppo_update

    config = ppo_config(tiny_model_dir, toy_data, "--ppo_epochs", 1, "--per_device_train_batch_size", 2,
                        "--temperature", 0.7, "--learning_rate", 1e-3)
    eager, exp = fixed_length_experience(tiny_model_dir, toy_data, config)
    eager.train()  # as ppo_update will: a switch of mode between calls would (rightly) recompile
    compiled = compile_module(copy.deepcopy(eager))
    reset_counters()

    # One forward/backward on rows of two different batch sizes (dynamic shapes: no recompile).
    graphs = []
    for rows in (torch.tensor([0, 1]), torch.tensor([2, 3, 4])):
        outputs = []
        for model in (eager, compiled):
            model.zero_grad()
            logits, values = model(*_minibatch(exp, rows), config.temperature)  # (b, R, V), (b, R)
            (logits.logsumexp(-1).mean() + values.square().mean()).backward()
            outputs.append((logits.detach(), values.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                                                if p.grad is not None}))
        graphs.append(compile_counters()["compile/graphs"])
        (le, ve, ge), (lc, vc, gc) = outputs
        torch.testing.assert_close(lc, le, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(vc, ve, rtol=1e-4, atol=1e-5)
        assert ge.keys() == gc.keys() and len(ge) > 4
        for name in ge:
            torch.testing.assert_close(gc[name], ge[name], rtol=1e-3, atol=1e-5, msg=name)

    # One PPO update, same shuffle for both. Plain SGD: AdamW divides by sqrt(v), which blows the
    # ~1e-9 rounding noise of a gradient that is zero in exact arithmetic (the attention key bias:
    # softmax ignores a constant shift) up to a full lr-sized step in a random direction.
    stats = []
    for model in (eager, compiled):
        model.zero_grad()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = make_scheduler(optimizer, config, 1)
        torch.manual_seed(1)
        stats.append(ppo_update(model, optimizer, scheduler, exp, config, config_accelerator(config), NonFiniteGuard(), 1))
    for name in ("loss/policy", "loss/value", "policy/entropy", "policy/approx_kl"):
        torch.testing.assert_close(stats[1][name], stats[0][name], rtol=1e-4, atol=1e-6, msg=name)
    for (name, pe), (_, pc) in zip(eager.named_parameters(), compiled.named_parameters()):
        torch.testing.assert_close(pc, pe, rtol=1e-4, atol=1e-6, msg=name)
    # Compiled at the first call; rows of 3 and the update's minibatches of 2 reuse those graphs.
    assert graphs[0] >= 1 and graphs[1] == graphs[0] == compile_counters()["compile/graphs"], graphs


def config_accelerator(config):
    from rlhf.trainers.setup import make_accelerator

    return make_accelerator(config)


def test_the_option_compiles_policy_and_value_in_place_keeping_checkpoint_keys(tiny_model_dir, toy_data):
    """--torch_compile true compiles the trainable module in place (compilation itself happens at
    its first call): its state_dict keys, which checkpoints and resume use, are eager's."""
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.trainers.ppo import build_policy_and_value

    tokenizer = load_tokenizer(str(tiny_model_dir), padding_side="left")
    modules = [build_policy_and_value(ppo_config(tiny_model_dir, toy_data, "--value_model", "shared", *flag),
                                      load_causal_lm(str(tiny_model_dir), tokenizer), tokenizer)
               for flag in ([], ["--torch_compile", "true"])]
    eager, compiled = modules
    assert eager._compiled_call_impl is None and compiled._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(eager.state_dict())


def test_compile_mode_is_validated(tiny_model_dir, toy_data):
    from rlhf.config.base import ConfigError

    with pytest.raises(ConfigError, match="torch_compile_mode must be one of default, reduce-overhead, max-autotune, "
                                          "max-autotune-no-cudagraphs, got 'fast'"):
        ppo_config(tiny_model_dir, toy_data, "--torch_compile", "true", "--torch_compile_mode", "fast")


def test_missing_compiler_is_a_clear_error(monkeypatch):
    from rlhf.config.base import ConfigError
    from rlhf.trainers.compile import check_compiler

    monkeypatch.setenv("CXX", "no-such-c++")
    with pytest.raises(ConfigError, match=r"torch_compile needs a C\+\+ compiler \('no-such-c\+\+' not found"):
        check_compiler()


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="does not hold yet (2026-11-29): two fresh compiled runs already differ in the "
                   "last digits of step 1's loss/policy, before any kill, so compiled runs are not bit-reproducible "
                   "across processes (suspect: inductor's CPU kernels; not yet isolated)")
def test_compiled_run_resumes_bit_identical(tiny_model_dir, toy_data, tmp_path):
    """SIGKILL after step 2 of a compiled run, resume (compiling afresh): the same weights and
    metrics as an uninterrupted compiled run. Both run as subprocesses with the same thread
    settings: inductor's C++ kernels split reductions by the thread count they were built for."""
    args = [*stage_args("ppo", tiny_model_dir, toy_data), "--torch_compile", "true"]
    args[args.index("--max_steps") + 1] = 4
    run("ppo", [*args, "--output_dir", tmp_path / "straight"], tmp_path)
    out = tmp_path / "killed"
    code, _ = start_and_signal("ppo", [*args, "--output_dir", out, "--resume"], tmp_path, out, 2, signal.SIGKILL)
    assert code == -signal.SIGKILL
    run("ppo", [*args, "--output_dir", out, "--resume"], tmp_path)
    assert_same_run(tmp_path / "straight", out)
