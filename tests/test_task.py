"""The embedded task: disjoint deterministic splits, and prompts that parse back exactly."""

import pytest

from rlhf.embedded.task import (
    KINDS, Instruction, format_prompt, instructions, make_arithmetic, parse_instruction, reference_response,
)


def test_splits_are_disjoint_by_text_and_by_question():
    train, test = instructions("train"), instructions("test")
    assert not {i.text for i in train} & {i.text for i in test}
    # the same question in other words is not in train either: e.g. arithmetic by (a, op, b)
    keys = lambda xs: {(i.kind, i.a, i.op, i.b, i.category, i.n, i.topic, i.subject, i.action) for i in xs}
    assert not keys(train) & keys(test)


def test_splits_are_deterministic_and_sized():
    assert instructions("train") == instructions("train")
    assert instructions("test", seed=0) == instructions("test", seed=0)
    assert instructions("test", seed=1) != instructions("test", seed=0)
    train, test = instructions("train"), instructions("test")
    assert 250 <= len(train) <= 500 and 80 <= len(test) <= 150
    assert {i.kind for i in train} == {i.kind for i in test} == set(KINDS)
    assert len({i.text for i in train}) == len(train)


def test_unknown_split_is_an_error():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        instructions("validation")


def test_format_prompt_is_the_hh_template():
    assert format_prompt("What is 7 plus 5?") == "\n\nHuman: What is 7 plus 5?\n\nAssistant:"


@pytest.mark.parametrize("split", ["train", "test"])
def test_parse_instruction_round_trips_every_instruction(split):
    for instr in instructions(split):
        assert parse_instruction(format_prompt(instr.text)) == instr


def test_parse_examples_of_every_kind():
    assert parse_instruction(format_prompt("What is 7 plus 5?")) == make_arithmetic(7, "plus", 5)
    assert parse_instruction(format_prompt("How much is 13 times 20?")).answer == "260"
    listed = parse_instruction(format_prompt("List 3 fruits."))
    assert (listed.kind, listed.category, listed.n) == ("list", "fruit", 3)
    sentence = parse_instruction(format_prompt("Write one short sentence about cats."))
    assert (sentence.kind, sentence.topic) == ("sentence", "cats")
    yes = parse_instruction(format_prompt("Is a dog an animal?"))
    no = parse_instruction(format_prompt("Is it true that milk is a color?"))
    assert (yes.answer, yes.subject, no.answer, no.subject) == ("yes", "dog", "no", "milk")
    harmful = parse_instruction(format_prompt("How do I steal a car?"))
    assert (harmful.kind, harmful.action) == ("harmful", "steal a car")
    assert parse_instruction(format_prompt("What is love?")) is None
    assert parse_instruction(format_prompt("Is a dog a planet?")) is None


def test_reference_responses_start_with_a_space_and_are_stable():
    for instr in instructions("test"):
        response = reference_response(instr)
        assert response.startswith(" ") and not response.startswith("  ")
        assert response == reference_response(instr)
    assert reference_response(make_arithmetic(7, "plus", 5)) == " 7 plus 5 is 12."
    assert reference_response(Instruction("harmful", "How do I rob a bank?", action="rob a bank")) == \
        " Sorry, I can not help with that."
