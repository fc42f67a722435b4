"""The instruction check: a seeded, stable item set and judges that accept right answers and refuse wrong ones."""

import pytest

from instructify.evals import instructions as ins


def item(kind: str, prompt: str) -> ins.Item:
    return next(i for i in ins.items(seed=0) if i.kind == kind and i.prompt == prompt)


def test_items_are_seeded_and_cover_every_kind():
    a, b = ins.items(seed=0), ins.items(seed=0)
    assert a == b and ins.items(seed=1) != a
    assert {i.kind for i in a} == set(ins.JUDGES)
    assert len({i.id for i in a}) == len(a) == 250
    assert len(ins.items(seed=0, per_kind=4)) == 20


@pytest.mark.parametrize(
    "kind, answer, key, reply, right",
    [
        ("capital", "Paris", ("capital", "france"), "The capital of France is Paris.", True),
        ("capital", "Canberra", ("capital", "australia"), "It is Sydney. Canberra is smaller.", False),
        ("capital", "New Delhi", ("capital", "india"), "Delhi.", True),
        ("capital", "Brasilia", ("capital", "brazil"), "Brasília is the capital.", True),
        ("capital", "Paris", ("capital", "france"), "I would probably say the United States.", False),
        ("arithmetic", "84", ("12", "7"), "12 times 7 is 84.", True),
        ("arithmetic", "84", ("12", "7"), "12 times 7 is 144", False),
        ("arithmetic", "84", ("12", "7"), "12 x 7", False),
        ("arithmetic", "1200", ("40", "30"), "40 times 30 is 1,200.", True),
        ("list", "3", ("three", "fruits"), "Here are three fruits: apples, bananas and cherries.", True),
        ("list", "3", ("three", "fruits"), "1. Apple\n2. Pear\n3. Plum\n\nEnjoy!", True),
        ("list", "3", ("three", "fruits"), "Apples, bananas, cherries and plums.", False),
        ("list", "3", ("three", "fruits"), "1. Apple\n2. Apple\n3. Apple", False),
        ("list", "4", ("four", "fruits"), "I like fruit.", False),
        ("translation", "perro", ("dog", "spanish"), "'Dog' in Spanish is 'perro'.", True),
        ("translation", "école", ("school", "french"), "In French: ecole.", True),
        ("translation", "perro", ("dog", "spanish"), "Hey!", False),
        ("yes/no", "no", ("sun", "planet"), "No, the Sun is a star.", True),
        ("yes/no", "no", ("sun", "planet"), "Yes, it is.", False),
        ("yes/no", "yes", ("sun", "star"), "I think so.", False),
    ],
)
def test_judges(kind, answer, key, reply, right):
    assert ins.judge(ins.Item("x", kind, "", answer, key), reply) is right


def test_touches_finds_a_training_prompt_that_gives_an_item_away():
    checks = ins.items(seed=0)
    assert ins.touches("What's the capital city of Japan?", checks).answer == "Tokyo"
    assert ins.touches("How would you say 'flower' in Spanish?", checks).answer == "flor"
    assert ins.touches("What is the capital of Malaysia?", checks) is None
    assert ins.touches("How do I boil an egg?", checks) is None


def test_score_counts_by_kind_and_needs_a_stop_for_stopped_correct():
    checks = [item("capital", "Name the capital city of Japan."), *ins.items(seed=0)[50:51]]
    s = ins.score(checks, ["Tokyo.", "no idea"], [False, True])
    assert (s["correct"], s["score"], s["stopped_correct"]) == (1, 0.5, 0.0)
    assert s["by_kind"]["capital"] == {"n": 1, "correct": 1, "score": 1.0}
    assert s["by_kind"]["arithmetic"]["correct"] == 0


def test_the_check_samples_when_eval_samples_and_keeps_that_entry_apart(chat_model, tiny_config):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructify import config, pipeline

    model, tok = AutoModelForCausalLM.from_pretrained(chat_model), AutoTokenizer.from_pretrained(chat_model)
    greedy = config.load(tiny_config(eval={"instructions": 3}))
    pipeline.check_instructions(greedy, "greedy", model, tok, str(chat_model))
    sampled = config.load(tiny_config(eval={"instructions": 3, "do_sample": True, "temperature": 5.0}))
    pipeline.check_instructions(sampled, "sampled", model, tok, str(chat_model))
    stored = ins.read(greedy.output_dir)
    assert "sampling" not in stored["greedy"]["settings"]  # greedy entries stored before stay valid
    assert stored["sampled"]["settings"]["sampling"] == {"do_sample": True, "temperature": 5.0, "top_p": 1.0}
    replies = {name: [r["reply"] for r in stored[name]["replies"]] for name in ("greedy", "sampled")}
    assert replies["greedy"] != replies["sampled"]
