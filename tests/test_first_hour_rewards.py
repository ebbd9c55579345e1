"""Issue 13, rewards and PPO wiring: no random score head taken for a reward or value model,
reward functions that load from anywhere and fail in seconds with a message naming the function,
the prompt and the value, the prompt as written and the record's fields passed to them, PPO
samples in samples.jsonl, and the prompt options (field, truncation, formats) wired and reported."""

import json
import shutil
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import write_jsonl
from rlhf.config.base import parse_config
from rlhf.config.ppo import PPOConfig
from rlhf.errors import UserError
from rlhf.models.loading import TRAINING_INFO_FILE, load_tokenizer
from rlhf.models.scalar_model import ScalarHeadError, ScalarModel
from rlhf.rewards.functions import RewardFunction, RewardFunctionError, check_reward_function, load_function
from rlhf.rewards.scorers import FunctionScorer, load_reward_model
from rlhf.trainers import online, ppo


def ppo_args(tiny_model_dir, prompts, out, *extra):
    return ["--model_name_or_path", str(tiny_model_dir), "--prompts_file", str(prompts), "--output_dir", str(out),
            "--max_steps", "1", "--rollout_batch_size", "4", "--per_device_train_batch_size", "4", "--ppo_epochs", "1",
            "--max_new_tokens", "4", "--disable_tqdm", "true", "--report_to", "none", *map(str, extra)]


def run_ppo(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppo.run(parse_config(PPOConfig, list(args)))


def saved_by(tmp_path, tiny_model_dir, stage: str) -> Path:
    """A copy of the tiny causal LM that says it was saved by ``rlhf <stage>``."""
    path = tmp_path / f"{stage}_model"
    shutil.copytree(tiny_model_dir, path)
    (path / TRAINING_INFO_FILE).write_text(json.dumps({"stage": stage}))
    return path


# --- 1. no random score head -------------------------------------------------------------------

def test_a_causal_lm_as_reward_model_is_refused_naming_path_and_kind(tiny_model_dir):
    with pytest.raises(ScalarHeadError, match=r"reward model '.*tiny_lm.*' has no trained scalar head \(its weights "
                                              r"lack score.weight\): it is a GPT2LMHeadModel checkpoint.*`rlhf rm`"):
        load_reward_model(tiny_model_dir)


@pytest.mark.parametrize("stage", ["sft", "ppo", "dpo"])
def test_a_reward_model_saved_by_a_policy_stage_is_refused(tiny_model_dir, tmp_path, stage):
    with pytest.raises(ScalarHeadError, match=rf"saved by `rlhf {stage}`: it is a policy .*--reward_function"):
        load_reward_model(saved_by(tmp_path, tiny_model_dir, stage))


def test_ppo_with_the_sft_model_as_reward_model_stops_before_training(tiny_model_dir, toy_data, tmp_path):
    sft_model = saved_by(tmp_path, tiny_model_dir, "sft")
    with pytest.raises(ScalarHeadError, match="saved by `rlhf sft`"):
        run_ppo(*ppo_args(tiny_model_dir, toy_data["prompts"], tmp_path / "out", "--reward_model_path", sft_model))
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_rm_may_start_a_head_explicitly_and_a_trained_head_loads(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(tiny_model_dir)
    torch.manual_seed(0)
    fresh = ScalarModel.from_pretrained(tiny_model_dir, tokenizer, allow_new_head=True)
    fresh.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    model, _, _ = load_reward_model(tmp_path / "rm")
    torch.testing.assert_close(model.head.weight, fresh.head.weight)  # the saved head, not a new one


def test_value_model_path_without_a_head_needs_allow_new_value_head(tiny_model_dir, toy_data, tmp_path):
    tokenizer = load_tokenizer(tiny_model_dir)
    base = ppo_args(tiny_model_dir, toy_data["prompts"], tmp_path, "--reward_function",
                    "reward_functions:target_char_rate")
    config = parse_config(PPOConfig, [*base, "--value_model_path", str(tiny_model_dir)])
    with pytest.raises(ScalarHeadError, match=r"value model '.*' has no trained scalar head.*--allow_new_value_head"):
        ppo.load_value_model(config, tokenizer)
    allowed = parse_config(PPOConfig, [*base, "--value_model_path", str(tiny_model_dir),
                                       "--allow_new_value_head", "true"])
    assert isinstance(ppo.load_value_model(allowed, tokenizer), ScalarModel)
    # With a reward function and no value_model_path the value starts from the policy, by design.
    assert isinstance(ppo.load_value_model(parse_config(PPOConfig, base), tokenizer), ScalarModel)


# --- 2. reward functions: where they load from, and errors that name what is wrong ---------------

@pytest.fixture
def bare_sys_path(monkeypatch, tmp_path):
    """The `rlhf` console script's sys.path: the current folder (tmp_path) is not on it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path), ".")])
    return tmp_path


def test_a_module_in_the_current_folder_loads_without_pythonpath(bare_sys_path):
    (bare_sys_path / "h3_local_rewards.py").write_text("def length(prompts, responses, ended):\n"
                                                       "    return [len(r) for r in responses]\n")
    function = load_function("h3_local_rewards:length")
    assert function(["p"], ["abc"], [True]) == [3.0]


@pytest.mark.parametrize("relative", [True, False])
def test_a_file_path_loads(bare_sys_path, relative):
    (bare_sys_path / "sub").mkdir()
    file = bare_sys_path / "sub" / "my_reward.py"
    file.write_text("def twice(prompts, responses, ended):\n    return [2.0 * len(r) for r in responses]\n")
    function = load_function(f"{'sub/my_reward.py' if relative else file}:twice")
    assert function(["p", "q"], ["a", "bc"], [True, False]) == [2.0, 4.0]


@pytest.mark.parametrize("spec, message", [
    ("a.b", r"--reward_function 'a.b': expected module:function or path/to/file.py:function \(did you mean a:b\?\), "
            r"e.g. my_rewards:length_reward"),
    ("h3_missing_module:f", r"no module named 'h3_missing_module' in the current folder .* give the file instead, "
                            r"e.g. path/to/h3_missing_module.py:f"),
    ("nowhere/rw.py:f", r"file 'nowhere/rw.py' not found \(a relative path starts from the current folder"),
    ("reward_functions:no_such", r"reward_functions has no function 'no_such' \(its functions: [a-z_, ]*huge_reward, "
                                 r"[a-z_, ]*nan_reward, [a-z_, ]*target_char_rate\)"),
    ("reward_functions:TARGET", r"TARGET is a str, not a function"),
])
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(RewardFunctionError, match=message):
        load_function(spec)


def test_a_function_that_cannot_take_three_arguments_is_refused():
    def two(prompts, responses):
        return [0.0]

    with pytest.raises(RewardFunctionError, match=r"cannot be called as f\(prompts, responses, ended\).*signature "
                                                  r"is \(prompts, responses\)"):
        RewardFunction(two, "m:two")


def raises_on_second(prompts, responses, ended):
    return [1.0 / (len(p) - 6) for p in prompts]  # "second" has 6 characters


@pytest.mark.parametrize("function, message", [
    (raises_on_second, r"m:f raised ZeroDivisionError: float division by zero \(at test_first_hour_rewards.py:\d+\) "
                       r"on the prompt 'second'"),
    (lambda p, r, e: [1.0], r"m:f returned 1 values for 2 responses \(first prompt 'first'\)"),
    (lambda p, r, e: ["0.5", 1.0], r"m:f returned '0.5' \(a str\) for the prompt 'first': each score must be a number"),
    (lambda p, r, e: [1.0, None], r"m:f returned None \(a NoneType\) for the prompt 'second'"),
    (lambda p, r, e: [1.0, float("nan")], r"m:f returned nan for the prompt 'second': each score must be a finite"),
    (lambda p, r, e: [float("-inf"), 1.0], r"m:f returned -inf for the prompt 'first'"),
    (lambda p, r, e: [1e39, 1.0], r"m:f returned 1e\+39 for the prompt 'first'"),  # inf as float32
    (lambda p, r, e: "0.5", r"m:f returned '0.5' \(a str\) for 2 responses: return a list"),
    (lambda p, r, e: None, r"m:f returned None \(a NoneType\) for 2 responses"),
])
def test_every_call_is_checked(function, message):
    with pytest.raises(RewardFunctionError, match=message):
        RewardFunction(function, "m:f")(["first", "second"], ["a", "b"], [True, True])


def test_tensors_arrays_and_bools_are_accepted():
    assert RewardFunction(lambda p, r, e: torch.tensor([0.5, 2.0]), "m:f")(["a", "b"], ["", ""], [1, 1]) == [0.5, 2.0]
    assert RewardFunction(lambda p, r, e: [True, False], "m:f")(["a", "b"], ["", ""], [1, 1]) == [1.0, 0.0]


def test_the_scorer_checks_training_calls_too():
    rollout = SimpleNamespace(ended=torch.tensor([True, False]), query_responses=torch.zeros(2, 3, dtype=torch.long))
    scorer = FunctionScorer(RewardFunction(lambda p, r, e: [0.0, float("nan")], "m:nan"))
    with pytest.raises(RewardFunctionError, match="m:nan returned nan for the prompt 'raw b'"):
        scorer(rollout, ["decoded a", "decoded b"], ["x", "y"], ["raw a", "raw b"], [{}, {}])


def test_a_bad_reward_function_fails_before_any_model_loads(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded before the reward function was checked")

    monkeypatch.setattr(online, "load_causal_lm", no_models)
    args = ppo_args(tiny_model_dir, toy_data["prompts"], tmp_path / "out")
    with pytest.raises(RewardFunctionError, match=r"reward_functions:nan_reward returned nan for the prompt "
                                                  r"'\\n\\nHuman: what is .*start-up check.*made-up response"):
        run_ppo(*args, "--reward_function", "reward_functions:nan_reward")
    with pytest.raises(RewardFunctionError, match="--gold_reward_function 'reward_functions.target_char_rate'"):
        run_ppo(*args, "--reward_function", "reward_functions:target_char_rate",
                "--gold_reward_function", "reward_functions.target_char_rate")
    assert issubclass(RewardFunctionError, UserError)


def test_the_check_names_a_required_field_the_records_lack():
    def needs_answer(prompts, responses, ended, answer):
        return [0.0] * len(prompts)

    with pytest.raises(RewardFunctionError, match=r"needs the field\(s\) answer, which the records of p.jsonl do not "
                                                  r"have \(they have: id\)"):
        check_reward_function(RewardFunction(needs_answer, "m:f"), ["a", "b"], [{"id": 1}, {"id": 2}], "p.jsonl")


# --- 3. the record's fields and the prompt as written ------------------------------------------

def test_fields_go_to_the_parameters_that_name_them_or_to_kwargs():
    seen = {}

    def named(prompts, responses, ended, answer=None):
        seen["named"] = answer
        return [0.0] * len(prompts)

    def kwargs(prompts, responses, ended, **fields):
        seen["kwargs"] = fields
        return [0.0] * len(prompts)

    def plain(prompts, responses, ended):
        return [0.0] * len(prompts)

    fields = [{"answer": "4", "id": 1}, {"answer": "9"}]
    for function in (named, kwargs, plain):
        RewardFunction(function)(["p", "q"], ["a", "b"], [True, True], fields)
    assert seen == {"named": ["4", "9"], "kwargs": {"answer": ["4", "9"], "id": [1, None]}}


RECORDING_REWARD = '''
import json, os


def reward(prompts, responses, ended, answer):
    with open(os.environ["H3_LOG"], "a") as f:
        f.write(json.dumps({"prompts": prompts, "answer": answer}) + "\\n")
    return [float(len(r)) for r in responses]


def gold(prompts, responses, ended):
    with open(os.environ["H3_LOG"] + ".gold", "a") as f:
        f.write(json.dumps(prompts) + "\\n")
    return [float(r.count("e")) for r in responses]
'''


@pytest.fixture(scope="module")
def gsm8k_like_run(tiny_model_dir, tmp_path_factory):
    """Two PPO steps on GSM8K-like records ({"question", "answer"}; one question holds the
    end-of-text token as text, one is too long), a reward function from a file and a gold function."""
    root = tmp_path_factory.mktemp("gsm8k_like")
    questions = ["what is one plus two?<|endoftext|>", "what is two plus two?", "what is one plus one?",
                 "a cat " * 40 + "what is three plus one?"]
    prompts = write_jsonl(root / "q.jsonl", [{"question": q, "answer": str(i)} for i, q in enumerate(questions)])
    (root / "my_reward.py").write_text(RECORDING_REWARD)
    log = root / "calls.jsonl"
    mp = pytest.MonkeyPatch()
    mp.setenv("H3_LOG", str(log))
    with pytest.warns(UserWarning) as caught:
        summary = ppo.run(parse_config(PPOConfig, ppo_args(
            tiny_model_dir, prompts, root / "out", "--prompt_field", "question", "--max_prompt_length", 24,
            "--reward_function", f"{root / 'my_reward.py'}:reward",
            "--gold_reward_function", f"{root / 'my_reward.py'}:gold", "--max_steps", 2, "--sample_every", 1,
            "--num_samples_to_log", 2, "--value_model", "shared")))
    mp.undo()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    golds = [json.loads(line) for line in Path(str(log) + ".gold").read_text().splitlines()]
    return SimpleNamespace(root=root, questions=questions, summary=summary, calls=calls, golds=golds,
                           warnings=[str(w.message) for w in caught])


def test_reward_functions_get_the_prompt_as_written_and_the_fields(gsm8k_like_run):
    run = gsm8k_like_run
    check, *steps = run.calls
    assert check == {"prompts": run.questions[:2], "answer": ["0", "1"]}  # the start-up check
    assert len(steps) == 2
    for call in steps:
        assert len(call["prompts"]) == 4
        for prompt, answer in zip(call["prompts"], call["answer"]):
            assert prompt == run.questions[int(answer)]  # exactly as written, <|endoftext|> and all
    # In training the gold function keeps the decoded prompts, as in evaluation (special tokens stripped).
    decoded = [p for call in run.golds[1:] for p in call]  # [0]: the start-up check
    assert "what is one plus two?" in decoded and not any("<|endoftext|>" in p for p in decoded)


def test_samples_jsonl_holds_each_logged_sample(gsm8k_like_run):
    rows = [json.loads(line) for line in (gsm8k_like_run.root / "out" / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 1, 2, 2]
    for row in rows:
        assert set(row) == {"step", "prompt", "response", "score", "gold_score"}
        assert row["score"] == float(len(row["response"]))  # the reward function's value for that response
        assert row["gold_score"] == float(row["response"].count("e"))


def test_prompt_truncation_is_warned_and_counted_in_the_summary(gsm8k_like_run):
    run = gsm8k_like_run
    assert any("1 of 4 prompts are longer than max_prompt_length 24 tokens and were cut (keeping the template "
               "head" in w for w in run.warnings), run.warnings
    assert run.summary["prompts"] == 4 and run.summary["prompts_truncated"] == 1
    assert run.summary["prompts_skipped_too_long"] == 0
    assert run.summary["prompt_formats"] == "plain text (4)"


def test_keep_samples_until_drops_the_lines_after_the_checkpoint(tmp_path):
    path = write_jsonl(tmp_path / "samples.jsonl", [{"step": s, "prompt": "p"} for s in (1, 1, 2, 3, 3)])
    online.keep_samples_until(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 1, 2]


# --- 5. prompt options and formats -------------------------------------------------------------

def test_skipped_prompts_are_warned_and_counted(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(tiny_model_dir, padding_side="left")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a cat"}, {"prompt": "a cat " * 30}])
    config = parse_config(PPOConfig, ppo_args(tiny_model_dir, prompts, tmp_path, "--reward_function", "m:f",
                                              "--max_prompt_length", 8, "--prompt_truncation", "skip"))
    records = online.load_prompt_records(config, str(prompts), tokenizer)
    with pytest.warns(UserWarning, match=r"1 of 2 prompts are longer than max_prompt_length 8 tokens and were left "
                                         r"out \(prompt_truncation skip\)"):
        examples = online.tokenize_prompt_records(config, records, tokenizer, str(prompts))
    assert len(examples) == 1
    assert online.prompt_summary(records, examples)["prompts_skipped_too_long"] == 1


def test_a_reward_model_trained_on_another_format_is_warned_about(tmp_path):
    from rlhf.data import CHAT_TEMPLATE, HH, PromptRecord

    rm = tmp_path / "rm"
    rm.mkdir()
    (rm / TRAINING_INFO_FILE).write_text(json.dumps({"stage": "rm", "prompt_format": CHAT_TEMPLATE}))
    config = SimpleNamespace(reward_model_path=str(rm), prompts_file="p.jsonl")
    records = [PromptRecord("\n\nHuman: hi\n\nAssistant:", format=HH)] * 3
    tokenizer = SimpleNamespace(chat_template=None)
    with pytest.warns(UserWarning, match=r"reward model .*rm was trained on prompts in chat template, but the PPO "
                                         r"prompts of p.jsonl are in HH-RLHF dialogue text \(3\)"):
        online.warn_on_format_mismatch(config, records, tokenizer)
    (rm / TRAINING_INFO_FILE).write_text(json.dumps({"stage": "rm", "prompt_format": HH}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        online.warn_on_format_mismatch(config, records, tokenizer)  # same format: silent


def test_the_check_runs_without_a_tokenizer_for_the_pipeline(tiny_model_dir, toy_data, tmp_path):
    """`rlhf pipeline` can check PPO's reward function before SFT has written the policy."""
    config = parse_config(PPOConfig, ppo_args("not/yet/written", toy_data["prompts"], tmp_path,
                                              "--reward_function", "reward_functions:nan_reward"))
    with pytest.raises(RewardFunctionError, match="nan_reward returned nan"):
        online.check_reward_functions(config)
