"""Issue 13, data part: no silent wrong results in loading and tokenization, and the options a
TRL user expects (field mapping, a chat-template switch, prompt truncation modes)."""

import json
import warnings

import pytest
from conftest import build_test_tokenizer, write_jsonl

from rlhf.config.base import ConfigError, parse_config
from rlhf.config.dpo import DPOConfig
from rlhf.config.ppo import PPOConfig
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.data import (CHAT_TEMPLATE, DEFAULT_TEMPLATE, HH, TEXT, DataError, Demonstration, PromptRecord, Source,
                       describe_formats, hh_to_messages, load_comparisons, load_demonstrations, load_prompts,
                       main_format, read_records, template_head, tokenize_comparisons, tokenize_demonstrations,
                       tokenize_prompts)
from rlhf.data.formats import Comparison
from rlhf.trainers import sft
from rlhf.trainers.datasets import load_train_eval_pairs

# A chat template of the usual shape: a header per turn, a generation prompt for the assistant.
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
SRC = Source("mem.jsonl", 3)


@pytest.fixture(scope="module")
def tokenizer():
    return build_test_tokenizer()


@pytest.fixture(scope="module")
def chat_tokenizer():
    tok = build_test_tokenizer()
    tok.chat_template = CHAT
    return tok


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- 1. invalid JSON: the column is on the line, not past its newline --------------------------

@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_invalid_json_column_is_counted_without_the_line_ending(tmp_path, ending):
    path = tmp_path / "d.jsonl"
    # line 2 is a truncated object of 14 characters: the parser wants a ',' or '}' at column 15
    path.write_bytes(('{"prompt": "a", "completion": "b"}' + ending + '{"prompt": "a"' + ending).encode())
    with pytest.raises(DataError) as err:
        list(read_records(path))
    # before the fix: "line 2: invalid JSON: Expecting ',' delimiter (column 1)" (the newline was parsed)
    assert str(err.value) == f"{path}, line 2: invalid JSON: Expecting ',' delimiter (column 15)"


# --- 2. field mapping on the command line ------------------------------------------------------

def test_sft_field_mapping_from_the_command_line_loads_gsm8k(tmp_path, tiny_model_dir, tokenizer):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", [{"question": "1+1?", "answer": "2\n#### 2"}] * 4)
    config = parse_config(SFTConfig, ["--model_name_or_path", str(tiny_model_dir), "--train_file", str(path),
                                      "--prompt_field", "question", "--completion_field", "answer",
                                      "--max_length", "64"])
    train, held_out, info = sft._load_examples(config, tokenizer)
    assert (len(train), held_out) == (4, [])
    assert train[0]["input_ids"] == encode(tokenizer, "1+1?") + encode(tokenizer, "2\n#### 2") + [
        tokenizer.eos_token_id]
    assert info == {"data_format": "plain text (4)", "prompt_format": TEXT, "truncated_examples": 0}


def test_comparison_field_mapping_and_errors_name_the_mapped_field(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"instruction": "P", "better": "good", "worse": "bad", "id": 1}])
    (pair,) = load_comparisons(path, prompt_field="instruction", chosen_field="better", rejected_field="worse")
    assert (pair.prompt, pair.chosen, pair.rejected) == ("P", "good", "bad")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "P", "better": "same", "worse": "same"},
                                               {"instruction": "P", "better": "x"}])
    with pytest.raises(DataError, match=r"line 1, field 'worse': better and worse are identical"):
        load_comparisons(bad, prompt_field="instruction", chosen_field="better", rejected_field="worse")
    skipped = load_comparisons(write_jsonl(tmp_path / "b2.jsonl", [{"instruction": "P", "better": "x"},
                                                                   {"instruction": "P", "better": "a", "worse": "b"}]),
                               skip_bad_records=True, prompt_field="instruction", chosen_field="better",
                               rejected_field="worse")
    assert [str(e) for e in skipped.skipped] == [
        f"{tmp_path / 'b2.jsonl'}, line 1, field 'worse': missing field (fields present: better, instruction)"]


def test_hh_dialogues_under_mapped_names_name_them_in_errors(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [{"good": "no shared prompt", "poor": "at all"}])
    with pytest.raises(DataError, match=r"field 'good': good and poor share no prompt"):
        load_comparisons(path, chosen_field="good", rejected_field="poor")


@pytest.mark.parametrize("config_cls", [RewardConfig, DPOConfig])
def test_rm_and_dpo_map_fields_from_the_command_line(config_cls, tmp_path, tiny_model_dir, tokenizer):
    path = write_jsonl(tmp_path / "p.jsonl", [{"q": f"P{i}", "a": "good", "b": "bad"} for i in range(10)])
    config = parse_config(config_cls, ["--model_name_or_path", str(tiny_model_dir), "--train_file", str(path),
                                       "--prompt_field", "q", "--chosen_field", "a", "--rejected_field", "b",
                                       "--max_length", "64"])
    train, held_out, info = load_train_eval_pairs(config, tokenizer)
    assert (len(train), len(held_out), info["data_format"]) == (9, 1, "plain text (10)")
    assert train[0]["chosen_ids"] == encode(tokenizer, "good") + [tokenizer.eos_token_id]


def test_field_options_are_checked(tiny_model_dir):
    base = ["--model_name_or_path", str(tiny_model_dir), "--train_file", "t.jsonl"]
    with pytest.raises(ConfigError, match="chosen_field and rejected_field must name different fields"):
        parse_config(RewardConfig, base + ["--chosen_field", "x", "--rejected_field", "x"])
    with pytest.raises(ConfigError, match="prompt_field must name a field of the data records"):
        parse_config(SFTConfig, base + ["--prompt_field", " "])
    ppo = ["--model_name_or_path", str(tiny_model_dir), "--prompts_file", "p.jsonl", "--reward_function", "m:f"]
    config = parse_config(PPOConfig, ppo + ["--prompt_field", "question", "--prompt_truncation", "skip",
                                            "--apply_chat_template", "true"])
    assert (config.prompt_field, config.prompt_truncation, config.apply_chat_template) == ("question", "skip", True)
    assert parse_config(PPOConfig, ppo).prompt_truncation == "keep_head"
    with pytest.raises(ConfigError, match="prompt_truncation must be one of keep_head, left, skip, got 'middle'"):
        parse_config(PPOConfig, ppo + ["--prompt_truncation", "middle"])


# --- 3. formats: remembered, summarised, warned about, and the apply_chat_template option ------

def test_every_record_remembers_its_format(tmp_path, chat_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "Write a poem.", "completion": "Roses."},
        {"prompt": "\n\nHuman: Hi\n\nAssistant:", "completion": " Hello."},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
    ])
    assert [d.format for d in load_demonstrations(path)] == [TEXT, HH, DEFAULT_TEMPLATE]
    assert [d.format for d in load_demonstrations(path, tokenizer=chat_tokenizer)] == [TEXT, HH, CHAT_TEMPLATE]
    hh = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": "\n\nHuman: Q\n\nAssistant: A",
                                              "rejected": "\n\nHuman: Q\n\nAssistant: B"}])
    assert load_comparisons(hh)[0].format == HH
    assert load_prompts(hh)[0].format == HH


def test_formats_are_described_in_words_with_counts():
    records = [Demonstration("p", "c", format=CHAT_TEMPLATE)] * 900 + [Demonstration("p", "c")] * 12
    assert describe_formats(records) == "chat template (900), plain text (12)"
    assert describe_formats([Demonstration("p", "c")] * 812) == "plain text (812)"
    assert describe_formats([Comparison("p", "a", "b", format=HH)]) == "HH-RLHF dialogue text (1)"
    assert main_format(records) == CHAT_TEMPLATE and main_format([]) is None


def test_warning_when_the_tokenizer_has_a_chat_template_and_records_skip_it(tmp_path, tiny_model_dir,
                                                                            chat_tokenizer, tokenizer):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"prompt": "P1", "chosen": "a", "rejected": "b"},
        {"prompt": "\n\nHuman: P2\n\nAssistant:", "chosen": " a", "rejected": " b"},
        {"prompt": [{"role": "user", "content": "P3"}], "chosen": [{"role": "assistant", "content": "a"}],
         "rejected": [{"role": "assistant", "content": "b"}]},
    ])
    config = RewardConfig(model_name_or_path=str(tiny_model_dir), train_file=str(path), max_length=64,
                          eval_fraction=0.0)
    with pytest.warns(UserWarning) as caught:
        *_, info = load_train_eval_pairs(config, chat_tokenizer)
    (message,) = [str(w.message) for w in caught if "chat template" in str(w.message)]
    assert message.startswith(f"{path}: 2 of 3 records do not use the tokenizer's chat template "
                              "(they are plain text (1), HH-RLHF dialogue text (1))")
    assert "messages" in message and "--apply_chat_template true" in message
    assert info["data_format"] == "plain text (1), HH-RLHF dialogue text (1), chat template (1)"
    with warnings.catch_warnings():  # no template, nothing to warn about
        warnings.simplefilter("error")
        load_train_eval_pairs(config, tokenizer)


def test_apply_chat_template_renders_strings_and_hh_dialogues_with_the_template(tmp_path, chat_tokenizer):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"prompt": "1+1?", "chosen": "2", "rejected": "3"},
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Hey\n\nHuman: 1+1?\n\nAssistant: 2",
         "rejected": "\n\nHuman: Hi\n\nAssistant: Hey\n\nHuman: 1+1?\n\nAssistant: 3"},
    ])
    plain, hh = load_comparisons(path, tokenizer=chat_tokenizer, apply_chat_template=True)
    assert (plain.prompt, plain.chosen, plain.format) == ("<|user|>1+1?<|end|><|assistant|>", "2", CHAT_TEMPLATE)
    assert hh.prompt == "<|user|>Hi<|end|><|assistant|>Hey<|end|><|user|>1+1?<|end|><|assistant|>"
    assert (hh.chosen, hh.rejected, hh.format) == ("2", "3", CHAT_TEMPLATE)  # HH's leading space dropped
    # without a tokenizer template the built-in one is used: an HH dialogue renders to itself
    no_template = load_comparisons(path, apply_chat_template=True)
    assert no_template[1].prompt == "\n\nHuman: Hi\n\nAssistant: Hey\n\nHuman: 1+1?\n\nAssistant:"
    assert (no_template[1].chosen, no_template[0].prompt) == (" 2", "\n\nHuman: 1+1?\n\nAssistant:")
    assert {c.format for c in no_template} == {DEFAULT_TEMPLATE}


def test_hh_to_messages():
    assert hh_to_messages("Be brief.\n\nHuman: Hi\n\nAssistant: Yo\n\nHuman: 2+2?\n\nAssistant:") == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "2+2?"}]
    assert hh_to_messages("Write a poem.") is None
    assert hh_to_messages("\n\nHuman: Hi\n\nAssistant: unfinished answer") is None


def test_sft_reports_its_data_format_and_saves_it_with_the_model(tiny_model_dir, toy_data, tmp_path, capsys):
    config = parse_config(SFTConfig, ["--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data["demos"]),
                                      "--output_dir", str(tmp_path), "--eval_fraction", "0.25", "--max_steps", "1",
                                      "--disable_tqdm", "true", "--report_to", "none"])
    summary = sft.run(config)
    assert summary["data_format"] == "HH-RLHF dialogue text (128)"
    assert summary["truncated_examples"] == 0
    info = json.loads((tmp_path / "model" / "rlhf_training.json").read_text())
    assert (info["stage"], info["prompt_format"]) == ("sft", HH)
    assert (f"train_file {toy_data['demos']}: 128 examples (HH-RLHF dialogue text (128)); eval: 32 held out "
            "(eval_fraction 0.25), 96 left for training") in capsys.readouterr().out


# --- 4. truncation is counted and reported ------------------------------------------------------

def test_tokenizers_count_truncated_records(tokenizer):
    demos = [Demonstration("hi", " ok", SRC), Demonstration("hi", " the lazy dog" * 20, SRC)]
    assert tokenize_demonstrations(demos, tokenizer, max_length=16).truncated == 1
    pairs = [Comparison("hi", " ok", " no", source=SRC), Comparison("hi", " ok", " the lazy dog" * 20, source=SRC)]
    assert tokenize_comparisons(pairs, tokenizer, max_length=16).truncated == 1
    prompts = [PromptRecord("hi", SRC), PromptRecord("the quick brown fox " * 10, SRC)]
    assert tokenize_prompts(prompts, tokenizer, max_prompt_length=8).truncated == 1


def test_sft_warns_once_per_file_with_the_count_and_max_length(tmp_path, tiny_model_dir, tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "hi", "completion": "ok"},
                                              {"prompt": "hi", "completion": "the lazy dog" * 20},
                                              {"prompt": "hi", "completion": "the lazy cat" * 20}])
    config = SFTConfig(model_name_or_path=str(tiny_model_dir), train_file=str(path), max_length=16)
    with pytest.warns(UserWarning) as caught:
        *_, info = sft._load_examples(config, tokenizer)
    messages = [str(w.message) for w in caught if "max_length" in str(w.message)]
    assert messages == [f"{path}: 2 of 3 examples are longer than max_length 16 tokens and were truncated (prompt "
                        "cut from the left, response from the right); raise --max_length, or set --truncation false "
                        "to make such a record an error"]
    assert info["truncated_examples"] == 2


# --- 5. prompt truncation for PPO: keep the template's head, cut from the left, or skip ---------

def test_template_head_is_what_comes_before_the_first_message(chat_tokenizer):
    assert template_head(None) == "\n\nHuman: "
    assert template_head(chat_tokenizer) == "<|user|>"


def test_keep_head_cuts_the_middle_and_keeps_the_default_templates_head(tokenizer):
    p = PromptRecord("\n\nHuman: " + "the quick brown fox " * 10 + "\n\nAssistant:", SRC)
    ids = encode(tokenizer, p.prompt)
    head = encode(tokenizer, "\n\nHuman:")  # "\n\nHuman: " ends in a space that merges with "the"
    assert ids[:len(head)] == head
    assert len(head) == 8 and len(ids) > 20  # this tokenizer's head: 8 tokens, kept as at most half of 20
    (example,) = tokenize_prompts([p], tokenizer, max_prompt_length=20)
    assert example["input_ids"] == ids[:8] + ids[-12:]
    assert tokenizer.decode(example["input_ids"]).startswith("\n\nHuman:")
    assert tokenizer.decode(example["input_ids"]).endswith("\n\nAssistant:")
    (left,) = tokenize_prompts([p], tokenizer, max_prompt_length=20, prompt_truncation="left")
    assert left["input_ids"] == ids[-20:]  # the old behaviour: the header is gone
    (short,) = tokenize_prompts([p], tokenizer, max_prompt_length=12)  # a head over half the limit is not kept
    assert short["input_ids"] == ids[-12:]


def test_keep_head_keeps_a_chat_templates_header(chat_tokenizer):
    p = PromptRecord("<|user|>" + "the quick brown fox " * 10 + "<|end|><|assistant|>", SRC, CHAT_TEMPLATE)
    ids = encode(chat_tokenizer, p.prompt)
    n_head = len(encode(chat_tokenizer, "<|user|>"))
    (example,) = tokenize_prompts([p], chat_tokenizer, max_prompt_length=16)
    assert example["input_ids"] == ids[:n_head] + ids[-(16 - n_head):]
    assert chat_tokenizer.decode(example["input_ids"]).startswith("<|user|>")


def test_skip_drops_long_prompts_and_counts_them(tokenizer):
    prompts = [PromptRecord("hi", SRC), PromptRecord("the quick brown fox " * 10, SRC)]
    kept = tokenize_prompts(prompts, tokenizer, max_prompt_length=8, prompt_truncation="skip")
    assert [e["input_ids"] for e in kept] == [encode(tokenizer, "hi")]
    assert (kept.skipped_too_long, kept.truncated) == (1, 0)
    with pytest.raises(DataError, match="all 1 prompts are longer than max_prompt_length 8"):
        tokenize_prompts(prompts[1:], tokenizer, max_prompt_length=8, prompt_truncation="skip")
    with pytest.raises(ValueError, match="prompt_truncation must be one of keep_head, left, skip"):
        tokenize_prompts(prompts, tokenizer, max_prompt_length=8, prompt_truncation="right")


# --- 6. the prompt as written and the record's other fields, for reward functions ---------------

def test_prompts_keep_raw_text_and_other_fields(tmp_path, tokenizer):
    messages = [{"role": "user", "content": "Hi"}]
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"question": "1+1?", "answer": "2", "level": 1},
        {"question": messages, "answer": "hello"},
    ])
    gsm, chat = load_prompts(path, prompt_field="question", apply_chat_template=True)
    assert (gsm.prompt, gsm.raw, gsm.fields) == ("\n\nHuman: 1+1?\n\nAssistant:", "1+1?", {"answer": "2", "level": 1})
    assert (chat.raw, chat.fields) == (messages, {"answer": "hello"})
    pairs = write_jsonl(tmp_path / "c.jsonl", [{"chosen": "\n\nHuman: Q\n\nAssistant: A",
                                                "rejected": "\n\nHuman: Q\n\nAssistant: B", "id": 7}])
    (derived,) = load_prompts(pairs)
    assert (derived.raw, derived.fields) == ("\n\nHuman: Q\n\nAssistant:", {"id": 7})
    first, second = tokenize_prompts([gsm, chat], tokenizer, max_prompt_length=64)
    assert (first["raw_prompt"], first["fields"]) == ("1+1?", {"answer": "2", "level": 1})
    assert second["raw_prompt"] == messages
    (built,) = tokenize_prompts([PromptRecord("typed in code", SRC)], tokenizer, max_prompt_length=64)
    assert (built["raw_prompt"], built["fields"]) == ("typed in code", {})


# --- 7. the eval split's size is stated at start -------------------------------------------------

def test_eval_split_size_is_stated_at_start(tmp_path, tiny_model_dir, tokenizer, capsys):
    train = write_jsonl(tmp_path / "t.jsonl", [{"prompt": f"P{i}", "chosen": "a", "rejected": "b"}
                                               for i in range(20)])
    evals = write_jsonl(tmp_path / "e.jsonl", [{"prompt": f"E{i}", "chosen": "a", "rejected": "b"}
                                               for i in range(3)])
    config = RewardConfig(model_name_or_path=str(tiny_model_dir), train_file=str(train), max_length=64)
    load_train_eval_pairs(config, tokenizer)
    assert capsys.readouterr().out == (f"train_file {train}: 20 pairs (plain text (20)); eval: 2 held out "
                                       "(eval_fraction 0.1), 18 left for training\n")
    config.eval_file = str(evals)
    load_train_eval_pairs(config, tokenizer)
    assert capsys.readouterr().out == f"train_file {train}: 20 pairs (plain text (20)); eval_file {evals}: 3 pairs\n"
    config.eval_file, config.eval_fraction = "", 0.0
    load_train_eval_pairs(config, tokenizer)
    assert capsys.readouterr().out.endswith("; no evaluation (set --eval_file or --eval_fraction)\n")
