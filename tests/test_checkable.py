"""instructify/evals/checkable.py: seeded template prompts of the kinds a program can check, apart from the instruction
check, and the test that keeps only right replies to them."""

import random

import pytest

from instructify.evals import checkable, instructions
from instructify.synth import prompts, replies


def test_templated_prompts_are_seeded_checkable_and_apart_from_the_check():
    made = {k: checkable.prompts(k, 60, random.Random(0)) for k in checkable.TEMPLATED}
    assert made == {k: checkable.prompts(k, 60, random.Random(0)) for k in checkable.TEMPLATED}
    assert all(checkable.arithmetic_result(p) is not None for p in made["arithmetic"])
    assert all(checkable.capital_answer(p) in checkable.CAPITALS.values() for p in made["capital"])
    assert all(checkable.translation_answer(p) for p in made["translate"])
    # the tables share no place, word or topic with the check's, so only arithmetic can touch it...
    assert not set(checkable.CAPITALS) & set(instructions.CAPITALS)
    assert not set(checkable.CAPITALS.values()) & set(instructions.CAPITALS.values())
    assert not set(checkable.WORDS) & set(instructions.TRANSLATIONS)
    assert not set(checkable.LIST_TOPICS) & set(instructions.LIST_TOPICS)
    assert not set(checkable.FACTS) & set(instructions.YES + instructions.NO) and len(checkable.FACTS) == 80
    checks = instructions.items()
    touching = [p for k in checkable.TEMPLATED for p in made[k] if instructions.touches(p, checks)]
    assert all(p in made["arithmetic"] for p in touching)
    # ...and synth's admit() drops those: nothing it takes gives a check item away
    seen: set[str] = set()
    taken = [p for k in checkable.TEMPLATED for p in made[k] if prompts.admit(p, seen, checks) is None]
    assert taken and not any(instructions.touches(p, checks) for p in taken)


@pytest.mark.parametrize(
    "prompt, reply, reason",
    [
        ("What is 23 plus 19?", "23 plus 19 is 42.", None),
        ("What is 23 plus 19?", "23 plus 19 is 41.", "wrong arithmetic"),
        ("What is 9 × 8?", "72", None),
        ("List three insects.", "1. Ant\n2. Bee\n3. Fly", None),
        ("Name four insects.", "Ants, bees and flies.", "wrong number of items"),
        ("Give me two dog breeds.", "A poodle and a beagle.", None),
        ("Give me two dog breeds.", "1. Poodle\n2. Poodle", "wrong number of items"),
        ("What is the capital of Ghana?", "The capital of Ghana is Accra.", None),
        ("Name the capital city of the Dominican Republic.", "Santo Domingo.", None),
        ("What is the capital of Ghana?", "Lagos is the capital, not Accra.", "wrong capital"),
        ("Which city is the capital of Texas?", "Houston.", "wrong capital"),
        ("Translate 'bird' into German.", "'Bird' in German is 'Vogel'.", None),
        ("What is 'white' in German?", "Weiss.", None),
        ("What is the French word for 'bird'?", "'Bird' in French is 'pájaro'.", "wrong translation"),
        ("Why is the sky blue?", "Because.", None),
        ("What is the capital of fashion?", "Paris.", None),  # not in the table: not checked
        ("Is Madrid in Spain?", "Yes, it is.", None),
        (
            "Is Madrid in Spain?",
            "No. Madrid is in Spain.",
            "wrong yes/no",
        ),  # the SFT model's way of being wrong
        ("Is copper a gas?", "Copper is a metal.", "wrong yes/no"),  # no yes or no
        (
            "Is the Sun a planet?",
            "Yes.",
            None,
        ),  # the check's own question: not in the table, never judged here
    ],
)
def test_a_reply_we_can_check_must_be_right(prompt, reply, reason):
    assert checkable.wrong(prompt, reply) == reason
    assert replies.reply_problem(prompt, reply, True, [0], "fact") == reason
