"""Text from the embedded world: answers of every quality, and the base model's pretraining corpus.

Responses come in named *qualities* so that the same generator serves the pretraining corpus
(a base model that knows the format but behaves badly), the simulated labelers'
demonstrations, and the candidate responses they rank:

=============  =====================================================================
good           a correct, concise answer in one of several phrasings
padded         a good answer wrapped in filler ("I hope this helps.")
wrong          a plausible but wrong answer (wrong number, wrong items, wrong yes/no,
               a sentence about something else; for harmful requests: complying)
repetitive     the answer, or its last word, repeated
decline        a polite refusal (right for harmful requests, wrong for the rest)
curt_decline   a refusal without politeness
rambling       unrelated facts from the world
=============  =====================================================================

Fillers never contain numbers, category members, "yes"/"no" or refusal words, so padding
changes only the length (and sentence count) of an answer, not what the gold reward checks.
"""

from __future__ import annotations

import random

from rlhf.embedded.task import (
    CATEGORIES, DECLINE, MASS_CATEGORIES, OPS, Instruction, capitalize, format_prompt, instruction_keys,
    instructions, join_items, member_with_article, members, reference_response, sentence_topics, topic_sentence,
)

QUALITIES = ("good", "padded", "wrong", "repetitive", "decline", "curt_decline", "rambling")

FILLER_BEFORE = ("Sure!", "Good question.", "Let me think.", "Here is my answer.", "Of course.", "Okay.")
FILLER_AFTER = ("I hope this helps.", "Let me know if you have more questions.", "Thank you for asking.",
                "Have a nice day.", "I am happy to help.", "It was fun to answer this question.",
                "Ask me again any time.", "I hope that is what you wanted to know.", "That is all I can say.",
                "It is a good thing to learn.", "I like questions like this one.")
POLITE_DECLINES = (DECLINE, "I am sorry, but I can not help with that.", "Sorry, I will not help you with that.",
                   "Sorry, I can not help you do that. Please ask me something else.")
CURT_DECLINES = ("I will not help with that.", "I can not tell you that.", "I refuse to answer.")
COMPLY_TEMPLATES = ("Sure, here is how to {act}. First, wait until it is dark.",
                    "It is easy to {act} if no one is looking.", "You can {act} at night.",
                    "Sure. To {act}, you just need a good plan.")


# ---- Good answers ---------------------------------------------------------------------------

def good_response(instr: Instruction, rng: random.Random) -> str:
    """A correct, concise answer: the reference or one of its equally good rephrasings."""
    if instr.kind == "arithmetic":
        forms = (f"{instr.a} {instr.op} {instr.b} is {instr.answer}.", f"The answer is {instr.answer}.",
                 f"It is {instr.answer}.", f"{instr.answer}.")
        return " " + rng.choice(forms)
    if instr.kind == "list":
        return " " + list_answer(instr.category, rng.sample(members(instr.category), instr.n), rng)
    if instr.kind == "sentence":
        return " " + topic_sentence(instr.topic, rng.randrange(4))
    if instr.kind == "yesno":
        short = "Yes, it is." if instr.answer == "yes" else "No, it is not."
        return rng.choice([reference_response(instr), " " + short, " " + short.split(",")[0] + "."])
    return " " + rng.choice(POLITE_DECLINES)


def list_answer(category: str, items: list[str], rng: random.Random) -> str:
    plural = CATEGORIES[category][0]
    forms = (capitalize(join_items(items)) + ".", capitalize(", ".join(items)) + ".",
             f"Here are {len(items)} {plural}: {join_items(items)}.", f"Some {plural} are {join_items(items)}.")
    return rng.choice(forms)


# ---- Bad answers ----------------------------------------------------------------------------

def wrong_response(instr: Instruction, rng: random.Random) -> str:
    """A plausible mistake of the kind a weak model makes."""
    if instr.kind == "arithmetic":
        wrong = int(instr.answer) + rng.choice([-3, -2, -1, 1, 2, 3, 10])
        if rng.random() < 0.3:  # the wrong operation
            wrong = OPS[rng.choice([op for op in OPS if op != instr.op])](instr.a, instr.b)
        wrong = abs(wrong) if str(abs(wrong)) != instr.answer else int(instr.answer) + 1
        return " " + rng.choice((f"{instr.a} {instr.op} {instr.b} is {wrong}.", f"The answer is {wrong}.",
                                 f"{wrong}."))
    if instr.kind == "list":
        return " " + wrong_list(instr, rng)
    if instr.kind == "sentence":
        other = rng.choice([t for t in sentence_topics() if t != instr.topic])
        choice = rng.random()
        if choice < 0.5:
            return " " + topic_sentence(other, rng.randrange(4))
        if choice < 0.8:
            return " " + topic_sentence(instr.topic, 0) + " " + topic_sentence(instr.topic, 1)
        return " " + capitalize(instr.topic) + "."
    if instr.kind == "yesno":
        x, cat = member_with_article(instr.subject), CATEGORIES[instr.category][1]
        if instr.answer == "yes":
            return rng.choice([f" No, {x} is not {cat}.", " No."])
        return rng.choice([f" Yes, {x} is {cat}.", " Yes."])
    return " " + rng.choice(COMPLY_TEMPLATES).format(act=instr.action.replace("my ", "your "))


def wrong_list(instr: Instruction, rng: random.Random) -> str:
    pool = members(instr.category)
    mistake = rng.choice(["count", "duplicate", "other_category"])
    if mistake == "count":
        n = max(1, instr.n + rng.choice([-1, 1]))
        items = rng.sample(pool, min(n, len(pool)))
    elif mistake == "duplicate":
        items = rng.sample(pool, instr.n - 1)
        items.insert(rng.randrange(len(items) + 1), rng.choice(items))
    else:
        other = rng.choice([c for c in CATEGORIES if c != instr.category])
        items = rng.sample(pool, instr.n - 1) + [rng.choice(members(other))]
        rng.shuffle(items)
    return list_answer(instr.category, items, rng)


def padded_response(instr: Instruction, rng: random.Random, fillers: int | None = None) -> str:
    """A good answer with ``fillers`` filler sentences (1 to 5 by default) around it."""
    fillers = rng.randint(1, 5) if fillers is None else fillers
    before = [rng.choice(FILLER_BEFORE)] if fillers > 1 and rng.random() < 0.5 else []
    after = rng.sample(FILLER_AFTER, fillers - len(before))
    return " " + " ".join(before + [good_response(instr, rng).strip()] + after)


def repetitive_response(instr: Instruction, rng: random.Random) -> str:
    answer = good_response(instr, rng).strip()
    if rng.random() < 0.5:
        return " " + " ".join([answer] * rng.randint(2, 4))
    last = answer.rstrip(".!?").split()[-1]
    return " " + answer.rstrip(".!?") + (" " + last) * rng.randint(3, 8) + "."


def rambling_response(rng: random.Random) -> str:
    return " " + " ".join(world_fact(rng) for _ in range(rng.randint(2, 4)))


def response_variant(instr: Instruction, quality: str, rng: random.Random) -> str:
    """A response to ``instr`` of the named quality (see the module docstring)."""
    if quality == "good":
        return good_response(instr, rng)
    if quality == "padded":
        return padded_response(instr, rng)
    if quality == "wrong":
        return wrong_response(instr, rng)
    if quality == "repetitive":
        return repetitive_response(instr, rng)
    if quality == "decline":
        return " " + rng.choice(POLITE_DECLINES)
    if quality == "curt_decline":
        return " " + rng.choice(CURT_DECLINES)
    if quality == "rambling":
        return rambling_response(rng)
    raise ValueError(f"unknown response quality {quality!r}; expected one of {QUALITIES}")


# ---- Facts about the world ------------------------------------------------------------------

def world_fact(rng: random.Random) -> str:
    """One true sentence about the world: membership, a list, arithmetic or a topic sentence."""
    category = rng.choice(list(CATEGORIES))
    plural, articled, entries = CATEGORIES[category]
    full, singular, member_plural = rng.choice(entries)
    kind = rng.random()
    if kind < 0.25:
        other = rng.choice([c for c in CATEGORIES if c != category])
        negative = rng.random() < 0.35
        cat = CATEGORIES[other][1] if negative else articled
        if not negative and category not in MASS_CATEGORIES and rng.random() < 0.4:
            return f"{capitalize(member_plural)} are {plural}."
        return f"{capitalize(full)} is {'not ' if negative else ''}{cat}."
    if kind < 0.45:
        items = rng.sample(members(category), rng.randint(2, 5))
        return rng.choice([f"Some {plural} are {join_items(items)}.",
                           f"Here are {len(items)} {plural}: {join_items(items)}.",
                           f"{capitalize(join_items(items))} are {plural}."])
    if kind < 0.8:
        a, op, b = rng.choice(instruction_keys("arithmetic"))
        return f"{a} {op} {b} is {OPS[op](a, b)}."
    return topic_sentence(rng.choice(sentence_topics()), rng.randrange(4))


# ---- Pretraining documents ------------------------------------------------------------------

# How often each quality answers a dialogue in the corpus: only a third is good, so the base
# model knows the format but leaves SFT much to fix.
CORPUS_QUALITY_WEIGHTS = {"good": 0.32, "padded": 0.16, "wrong": 0.22, "repetitive": 0.1,
                          "decline": 0.05, "curt_decline": 0.03, "rambling": 0.12}


def corpus_dialogue(pool: list[Instruction], rng: random.Random) -> str:
    """One to three HH-style turns, each answered with a random quality; harmful requests are
    mostly complied with ("wrong"), as by a base model that was never taught to refuse."""
    turns = 1 + (rng.random() < 0.3) + (rng.random() < 0.1)
    qualities, weights = zip(*CORPUS_QUALITY_WEIGHTS.items())
    text = ""
    for _ in range(turns):
        instr = rng.choice(pool)
        quality = rng.choices(qualities, weights)[0]
        if instr.kind == "harmful" and rng.random() < 0.5:
            quality = "wrong"
        text += format_prompt(instr.text) + response_variant(instr, quality, rng)
    return text


def fact_document(rng: random.Random) -> str:
    return " ".join(world_fact(rng) for _ in range(rng.randint(3, 8)))


def pretraining_documents(num_docs: int, seed: int = 0, dialogue_share: float = 0.6) -> list[str]:
    """``num_docs`` documents (to be separated by end-of-text): facts, and dialogues on the
    *train* instructions only, so held-out prompts stay unseen (their facts are known)."""
    rng = random.Random(f"corpus-{seed}")
    pool = instructions("train", seed=0)
    return [corpus_dialogue(pool, rng) if rng.random() < dialogue_share else fact_document(rng)
            for _ in range(num_docs)]
