"""instructify/evals/second_set.py: a second instruction check that shares no table, phrasing or sum with the check,
`synth`'s or `improve`'s prompts, judged by the check's judges over its own cities and spellings."""

import random
import re

import pytest

from instructify.evals import checkable, headroom, instructions, second_set


def test_the_second_set_shares_nothing_with_the_check_or_the_rounds_prompts():
    items = second_set.items()
    assert items == second_set.items() and items != second_set.items(seed=3)
    assert {k: sum(i.kind == k for i in items) for k in instructions.JUDGES} == dict.fromkeys(
        instructions.JUDGES, 50
    )
    assert len({i.prompt for i in items if i.kind != "list"}) == 200
    assert not set(second_set.CAPITALS) & (set(instructions.CAPITALS) | set(checkable.CAPITALS))
    assert not set(second_set.TRANSLATIONS) & (set(instructions.TRANSLATIONS) | set(checkable.WORDS))
    assert not set(second_set.LIST_TOPICS) & (set(instructions.LIST_TOPICS) | set(checkable.LIST_TOPICS))
    assert not set(second_set.YES + second_set.NO) & (
        set(instructions.YES + instructions.NO) | set(checkable.FACTS)
    )
    phrasings = {"capital": checkable.CAPITAL_PROMPTS, "translation": checkable.TRANSLATION_PROMPTS}
    assert not any(set(second_set.ASKED[k]) & set(v) for k, v in phrasings.items())
    # no sum a round or synth draws (headroom.prompts is what improve asks), none of the check's
    sums = lambda prompts: {tuple(m) for p in prompts for m in checkable.ARITHMETIC.findall(p)}
    norm = lambda found: {(a, {"plus": "+", "minus": "-", "times": "×"}.get(op, op), b) for a, op, b in found}
    drawn = norm(sums(checkable.prompts("arithmetic", 20000, random.Random(0))))
    asked = norm(sums(p for k, p in headroom.prompts(200, 50, seed=7) if k == "arithmetic"))
    ours = norm(sums(i.prompt for i in items if i.kind == "arithmetic"))
    check = norm(sums(i.prompt for i in instructions.items() if i.kind == "arithmetic"))
    assert len(ours) == 50 and not ours & (drawn | asked | check)
    # a reply that names the place asked about first is not judged by it: no place is one of the cities
    cities = {instructions.norm(c) for c in second_set.CITIES}
    assert not [p for p in second_set.CAPITALS if any(
        re.search(rf"\b{re.escape(c)}\b", instructions.norm(p)) for c in cities)]  # fmt: skip


@pytest.mark.parametrize(
    "prompt, answer, reply, right",
    [
        ("Tell me the capital of Chad.", "N'Djamena", "The capital of Chad is N'Djamena.", True),
        ("Tell me the capital of Chad.", "N'Djamena", "It is Ndjamena.", True),
        ("What's the capital city of Quebec?", "Quebec City", "The capital of Quebec is Quebec City.", True),
        ("What's the capital city of Ontario?", "Toronto", "Ottawa. Toronto is its largest city.", False),
        ("Tell me the capital of Yemen.", "Sanaa", "Sana'a is the capital of Yemen.", True),
        ("Give me the German word for 'chicken'.", "Huhn", "Hähnchen", True),
        ("In French, how would you say 'key'?", "clé", "Clef.", True),
        ("In French, how would you say 'key'?", "clé", "Porte.", False),
        ("How much is 75 plus 12?", "87", "75 plus 12 is 87.", True),
        ("Is Paris in Spain?", "no", "No, Paris is in France.", True),
    ],
)
def test_second_set_judges(prompt, answer, reply, right):
    kind = (
        "capital"
        if "capital" in prompt
        else "translation"
        if "'" in prompt
        else "arithmetic"
        if "plus" in prompt
        else "yes/no"
    )
    key = tuple(re.findall(r"\d+", prompt)) if kind == "arithmetic" else ()
    assert second_set.judge(instructions.Item("x", kind, prompt, answer, key), reply) is right
