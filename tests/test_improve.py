"""improve (instructify/improve.py): a round keeps the model's own right, stopped, distinct samples, trains from the
model it sampled through the `train` stages, and is measured on the SFT run's held-out prompts."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import COIN, CORPUS, SURE, WRONG, _learnt_gemma, conversations
from transformers import AutoModelForCausalLM, AutoTokenizer

from instructify import config, improve, improve_chat
from instructify.data import splits
from instructify.evals import conformance, headroom


@pytest.fixture(scope="module")
def taught(taught_model):
    return AutoModelForCausalLM.from_pretrained(taught_model), AutoTokenizer.from_pretrained(taught_model)


SAMPLING = ["template.temperature=1.0", "template.top_p=1.0"]


def test_a_round_keeps_right_stopped_distinct_samples(taught):
    model, tok = taught
    cfg = config.load(
        None, [*SAMPLING, "improve.samples=8", "improve.keep_per_prompt=2", "eval.max_new_tokens=8"]
    )
    asked = [("arithmetic", SURE), ("arithmetic", COIN), ("list", WRONG)]
    rows, samples, counts = improve.own_rows(model, tok, asked, cfg, seed=0)
    # SURE: eight times "19", kept once; COIN: "25" kept once, "52" judged wrong; WRONG: one insect, never kept
    assert [[m["content"] for m in r["messages"]] for r in rows] == [[SURE, "19"], [COIN, "25"]], rows
    assert counts["kept"] == 2 and counts["prompts with a kept reply"] == 2 and len(samples) == 24
    assert counts["wrong number of items"] == 8 and counts["same as a kept reply"] >= 7
    assert counts["wrong arithmetic"] == sum(s["prompt"] == COIN and s["reply"] != "25" for s in samples)


def test_mcnemar_on_paired_verdicts():
    assert improve.mcnemar([False] * 5 + [True] * 3, [True] * 8) == {"gained": 5, "lost": 0, "p": 0.0625}
    assert improve.mcnemar([True, False], [True, False])["p"] == 1.0


@pytest.mark.parametrize("method", ["rft", "rpo"])
def test_a_round_trains_from_the_model_it_sampled_and_is_measured_on_the_sft_prompts(
    method,
    taught_model,
    tmp_path,
    chat_file,
    monkeypatch,
):
    start = taught_model
    out = tmp_path / "run"
    out.mkdir()
    held = [{**c, "messages": c["messages"][:1], "reference": c["messages"][1]["content"], "prior_turns": 1}
            for c in conversations(4)]  # fmt: skip
    (out / "eval_prompts.json").write_text(json.dumps(held))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "output_dir": str(out), "model": {"dtype": "float32"},
        "data": {"sources": [{"path": str(chat_file)}], "eval_share": 0.2, "max_length": 64},
        "lora": {"r": 4, "alpha": 8}, "training": {"per_device_batch_size": 4, "logging_steps": 1},
        "eval": {"num_conversations": 4, "max_new_tokens": 8, "batch_size": 4, "instructions": 1, "reference": "",
                 "monitor_every": 0, "monitor_generate_every": 0},
        "improve": {"start": str(start), "samples": 4, "max_steps": 2, "learning_rate": 1e-3, "method": method,
                    "chat_pairs": 2},
    }))  # fmt: skip
    # the tiny model knows two prompts, not the seeded ones: the round is asked those
    asked = [("arithmetic", SURE), ("arithmetic", COIN), ("list", WRONG)]
    monkeypatch.setattr(headroom, "prompts", lambda *a: asked)
    from instructify import cli

    assert cli.main(["improve", "--config", str(path), *SAMPLING]) == 0
    round_1 = out / "round-1"
    kept = [json.loads(line) for line in (round_1 / "own-rows.jsonl").read_text().splitlines()]
    assert {r["messages"][1]["content"] for r in kept} == {"19", "25"}
    ran = yaml.safe_load((round_1 / "config.yaml").read_text())
    assert ran["model"]["name"] == str(start) and ran["template"]["name"] == "model"
    mixed = [str(chat_file)] if method == "rft" else []  # rpo trains on its pairs alone
    assert [s["path"] for s in ran["data"]["sources"]] == [str(round_1 / "own-rows.jsonl"), *mixed]
    assert (round_1 / "chat-samples.jsonl").is_file() == (method == "rpo")  # chat pairs are preference pairs
    if method == "rpo":  # COIN's "25" over its "52": the one prompt with a right and a wrong reply
        pairs = [json.loads(line) for line in (round_1 / "own-pairs.jsonl").read_text().splitlines()]
        own = {(p["prompt"][0]["content"], p["rejected"][0]["content"]) for p in pairs if p["kind"] != "chat"}
        assert own == {(COIN, "52")}
        chat = [json.loads(line) for line in (round_1 / "chat-samples.jsonl").read_text().splitlines()]
        assert len(chat) == 2 and sum(p["kind"] == "chat" for p in pairs) <= 2
        assert json.loads((round_1 / "dpo.json").read_text())["steps"] == 2
    assert json.loads((round_1 / "eval_prompts.json").read_text()) == held
    assert (round_1 / "model" / "model.safetensors").is_file()
    result = json.loads((out / "improve.json").read_text())
    first = result["rounds"][0]
    assert first["counts"]["kept"] == 2 and set(first["check"]) == {"base", "trained"}
    assert (
        first["seconds"] >= first["sampling_seconds"] and first["seconds"] > 0
    )  # a round's time, for bench/
    # the round answered the second check too: 1 item per kind, its own ids, start and model paired
    second = json.loads((round_1 / "instructions-second.json").read_text())
    assert [r["id"].split("-")[1] for r in second["trained"]["replies"]] == [
        "capital", "arithmetic", "list", "translate", "yesno"]  # fmt: skip
    assert (
        set(first["second_check"]["score"]) == {"base", "trained"} and "p" in first["second_check"]["mcnemar"]
    )


def test_more_arithmetic_prompts_leave_the_others_as_they_were():
    base = config.load(None, ["improve.prompts_per_kind=5"])
    more = config.load(None, ["improve.prompts_per_kind=5", "improve.arithmetic_prompts=30"])
    asked, with_more = improve.asked_in(base, 1), improve.asked_in(more, 1)
    extra = with_more[len(asked) :]
    assert with_more[: len(asked)] == asked and len(set(with_more)) == len(with_more)
    assert len(extra) == 30 and {kind for kind, _ in extra} == {"arithmetic"}, extra
    with pytest.raises(config.ConfigError, match="improve.arithmetic_prompts"):
        config.load(None, ["improve.arithmetic_prompts=-1"])


def test_improve_without_a_model_says_what_to_run(tmp_path):
    from instructify import cli

    assert cli.main(["improve", f"output_dir={tmp_path}"]) == 2


def _checked(**correct) -> dict:
    """An instruction-check entry with `correct` of 50 items per kind (judged replies in kind order)."""
    replies = [{"correct": i < k} for k in correct.values() for i in range(50)]
    by_kind = {kind: {"n": 50, "correct": k} for kind, k in correct.items()}
    return {"score": sum(correct.values()) / (50 * len(correct)), "by_kind": by_kind, "replies": replies}


def test_the_guards_of_a_round_that_bought_answers_with_stops(tmp_path):
    """The quickstart's first round (runs/quickstart/round-1): stop 97.5%, loops 5.5%, median reply 7 -> 10."""
    entry = lambda stop, loops, median: {"stop_rate": stop, "loop_rate": loops, "reply_tokens_median": median}
    (tmp_path / "report.json").write_text(
        json.dumps({"base": entry(1.0, 0.005, 7), "trained": entry(0.975, 0.055, 10)})
    )
    checked = _checked(capital=20)
    (tmp_path / "instructions.json").write_text(json.dumps({"base": checked, "trained": checked}))
    guards = improve.summary(tmp_path)["guards"]
    assert guards == {
        "stop_rate >= 0.98": False,
        "loop_rate <= 0.01": False,
        "median reply within 50% of the SFT model's": True,
        "no kind below the SFT model's interval": True,
    }


def test_a_round_that_bought_one_kind_with_another_is_not_kept(tmp_path):
    """rpo round 2's own figures on the check (translations 21 -> 35), but capitals 42 -> 30: below the SFT
    model's interval for capitals (42/50: 71-92%), so the guard fails; 42 -> 38 stays inside it."""
    sft, later = tmp_path / "round-1", tmp_path / "round-2"
    for folder in (sft, later):
        folder.mkdir()
        good = {"stop_rate": 1.0, "loop_rate": 0.0, "reply_tokens_median": 8}
        (folder / "report.json").write_text(json.dumps({"base": good, "trained": good}))
    start = _checked(capital=42, translation=21)
    (sft / "instructions.json").write_text(json.dumps({"base": start, "trained": start}))
    for capitals, kept in [(38, True), (30, False)]:
        now = _checked(capital=capitals, translation=35)
        (later / "instructions.json").write_text(json.dumps({"base": start, "trained": now}))
        figures = improve.summary(later, sft)
        assert figures["guards"]["no kind below the SFT model's interval"] is kept
        assert figures["second_check"] == {}  # not run: no guard from it
    # a kind lost only on the second check fails the round too
    (sft / "instructions-second.json").write_text(json.dumps({"base": start}))
    (later / "instructions-second.json").write_text(
        json.dumps({"base": start, "trained": _checked(capital=42, translation=5)})
    )
    figures = improve.summary(later, sft)
    assert figures["second_check"]["worse_than_sft"] == ["translation"]
    assert not figures["guards"]["no kind below the SFT model's interval"]


def _sample(prompt, reply, why, stopped=True):
    return {"kind": "arithmetic", "prompt": prompt, "reply": reply, "stopped": stopped, "why": why}


def test_pairs_are_a_right_reply_and_a_wrong_one_that_stopped():
    samples = [
        _sample(COIN, "25", None),
        _sample(COIN, "25", "same as a kept reply"),
        _sample(COIN, "52", "wrong arithmetic"),
        _sample(COIN, "30 minus 5 is 30 minus 5 is", "wrong arithmetic", stopped=False),  # ran to the limit
        _sample(SURE, "19", None),  # all right: nothing to prefer it to
        _sample(WRONG, "ants", "wrong number of items"),  # none right
    ]
    pairs, counts = improve.pairs_of(samples, most=2)
    assert [
        (p["prompt"][0]["content"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs
    ] == [(COIN, "25", "52")]
    assert counts == {"prompts with a pair": 1, "prompts with no wrong reply": 1, "prompts with no right reply": 1,
                      "pairs": 1}  # fmt: skip


def test_a_pairs_two_replies_are_both_lines_or_both_sentences():
    """runs/qs-rpo6 chose lines over a sentence in 17 of 46 list pairs (none the reverse), then wrote lines
    into chat."""
    lines, other = "1. Ants.\n2. Bees.\n3. Wasps.", "1. Ants.\n2. Bees."
    four, three = "List four insects.", "List three insects."
    samples = [
        _sample(three, lines, None), _sample(three, "Ants, bees and wasps.", None),
        _sample(three, "Ants and bees.", "wrong number of items"),  # only a sentence to prefer a sentence to
        _sample(four, "1. Ants.\n2. Bees.\n3. Wasps.\n4. Moths.", None),
        _sample(four, "Ants, bees and wasps.", "wrong number of items"),  # no lines wrong: no pair
        _sample("List two insects.", lines, "wrong number of items"), _sample("List two insects.", other, None),
    ]  # fmt: skip
    pairs, counts = improve.pairs_of(samples, most=2)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("Ants, bees and wasps.", "Ants and bees."), (other, lines)]  # fmt: skip
    assert counts["prompts with no wrong reply of a right one's form"] == 1 and counts["pairs"] == 2


@pytest.mark.parametrize(
    "reply, repeats",
    [
        ("1. Go to bed.\n2. Go to sleep.\n3. Eat a healthy breakfast.\n4. Eat a healthy lunch.", True),
        ("1. The Rhine, 2. The Danube, 3. The Rhine, 4. The Seine.", True),  # the count sees 4 distinct
        ("1. Share a hobby.\n2. Share a hobby with a friend.\n3. Read.\n4. Ski.", True),
        ("1. Go to the beach.\n2. Go to the mountains.\n3. Read.\n4. Ski.", False),
        ("Rome, Venice, Florence and Milan.", False),
    ],
)
def test_a_list_whose_items_repeat_each_other_is_not_trained_on(reply, repeats):
    prompt = "Please list four things to do."
    assert improve.repetitive(prompt, reply) == repeats
    why = improve.judged(prompt, conformance.Reply("p", 1, reply, 10, True, False))
    assert why == ("right count, items repeat each other" if repeats else None)
    assert not improve.repetitive("What is the capital of Peru?", "Lima and Lima.")


def test_rpo_pairs_are_the_chatml_rows_the_model_sees_and_the_reference_is_the_start(taught_model):
    """TRL renders the pairs with the model's own template: the prompt ids are the generation prompt that
    evaluation and serving give the model, each reply is closed by <|im_end|> exactly once, and the reference
    (the adapter disabled) scores as the start model did, after training too."""
    import torch

    from instructify.training import dpo

    model, tok = (
        AutoModelForCausalLM.from_pretrained(taught_model),
        AutoTokenizer.from_pretrained(taught_model),
    )
    pairs = [{"prompt": [{"role": "user", "content": COIN}], "chosen": [{"role": "assistant", "content": "25"}],
              "rejected": [{"role": "assistant", "content": "52"}]}] * 4  # fmt: skip
    chat = lambda *m, **kw: tok.apply_chat_template(list(m), tokenize=True, return_dict=True, **kw)[
        "input_ids"
    ]
    whole = torch.tensor([chat(*pairs[0]["prompt"], *pairs[0]["chosen"])])
    with torch.no_grad():
        before = model(input_ids=whole).logits
    cfg = config.load(None, ["improve.method=rpo", "training.max_steps=3", "training.learning_rate=1e-2",
                             "training.per_device_batch_size=2", "lora.r=4", "lora.alpha=8"])  # fmt: skip
    trainer = dpo.trainer_for(cfg, model, tok, pairs)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for row in trainer.train_dataset.select(range(2)):
        print({k: tok.decode(row[f"{k}_ids"]) for k in dpo.FIELDS})  # the dump: pytest -s shows it
        assert row["prompt_ids"] == chat(*pairs[0]["prompt"], add_generation_prompt=True)
        for side in ("chosen", "rejected"):
            ids = row[f"{side}_ids"]
            assert ids.count(end) == 1 and not tok.decode(ids[ids.index(end) + 1 :]).strip(), tok.decode(ids)
    assert trainer.ref_model is None
    trainer.train()
    with torch.no_grad():
        with trainer.model.disable_adapter():
            torch.testing.assert_close(trainer.model(input_ids=whole).logits, before)
        assert not torch.allclose(trainer.model(input_ids=whole).logits, before), "the adapter did not train"


NINE = "What is 9 plus 9?"


@pytest.fixture(scope="module")
def hint_taker(tmp_path_factory):
    """A tiny model always wrong on NINE, and right when the answer is given as a hint."""
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in [(NINE, "99"), (improve.hinted("arithmetic", NINE), "18")]]  # fmt: skip
    texts = [m["content"] for r in rows for m in r["messages"]] * 10 + CORPUS
    path = _learnt_gemma(texts, 300, 256, 128, rows, 150, 3e-3, tmp_path_factory.mktemp("hint-taker"))
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("hints", [False, True])
def test_a_hinted_right_reply_is_kept_for_the_prompt_as_asked(hint_taker, hints):
    model, tok = hint_taker
    cfg = config.load(
        None,
        [
            *SAMPLING,
            "improve.samples=4",
            f"improve.hints={hints}",
            "improve.corrections=false",
            "eval.max_new_tokens=8",
        ],
    )
    rows, samples, counts = improve.own_rows(model, tok, [("arithmetic", NINE)], cfg, seed=0)
    assert improve.hinted("arithmetic", NINE) == f"{NINE} (Hint: the answer is 18.)"
    if not hints:
        assert rows == [] and counts["wrong arithmetic"] == 4 and len(samples) == 4
        return
    assert [[m["content"] for m in r["messages"]] for r in rows] == [[NINE, "18"]]
    assert counts["kept (hinted)"] == 1 and counts["wrong arithmetic"] == 4 and len(samples) == 8
    assert {s["hint"] for s in samples if s["kept"]} == {improve.hinted("arithmetic", NINE)}
    pairs, _ = improve.pairs_of(samples, most=2)
    assert [
        (p["prompt"][0]["content"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs
    ] == [(NINE, "18", "99")]


@pytest.mark.parametrize("hints", [False, True])
def test_a_wrong_sum_corrected_by_program_is_kept_where_nothing_else_was(hint_taker, hints):
    model, tok = hint_taker
    over = [*SAMPLING, "improve.samples=4", f"improve.hints={hints}", "improve.corrections=true"]
    cfg = config.load(None, [*over, "eval.max_new_tokens=8"])
    rows, samples, counts = improve.own_rows(model, tok, [("arithmetic", NINE)], cfg, seed=0)
    assert [[m["content"] for m in r["messages"]] for r in rows] == [[NINE, "18"]]
    assert counts.get("kept (corrected)") == (None if hints else 1)  # a hinted right reply comes first
    pairs, _ = improve.pairs_of(samples, most=2)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [("18", "99")]
    assert improve.corrected("What is 15 plus 10?", "15 + 10 is 100.") == "15 + 10 is 25."
    assert improve.corrected("Calculate 11 times 8.", "11 times 8 is 100.") == "11 times 8 is 88."
    for prompt, reply in [("What is 7 × 3?", "7 × 3 is 7 × 3."), ("What is 55 - 35?", "55 is 64."),
                          ("What is the capital of Peru?", "Lima."), ("What is 5 plus 4?", "4 + 5 is 8.")]:  # fmt: skip
        assert improve.corrected(prompt, reply) is None, reply


def test_a_right_answer_that_misquotes_the_prompt_is_not_trained_on():
    """The quickstart's first hinted round kept "14 - 22 is 14." for "Calculate 36 - 22.": the check's judge
    passes it (the first number past the operands is 14); a round must not train on it."""
    prompt = "Calculate 36 - 22."
    for text in ["36 - 22 is 14.", "14", "The answer is 14.", "36 minus 22 equals 14."]:
        assert not improve.misquoted(prompt, text), text
    for text in ["14 - 22 is 14.", "36 - 22 is 14, not 15."]:
        assert improve.misquoted(prompt, text), text
    assert not improve.misquoted("What is 5 minus 9?", "5 minus 9 is -4.")
    assert not improve.misquoted("List two insects.", "ants, 2 bees")  # not arithmetic: the check decides


@pytest.mark.parametrize(
    "prompt, reply, contradicts",
    [  # the round's own samples (runs/qs-rpo3-raw-yesno): right by the judge's first yes or no
        ("Is the Sun cold?", "No. The Sun is cold.", True),
        ("Do cats bark?", "No. Cats bark because they are very smart.", True),
        ("Does a tricycle have two wheels?", "No. A tricycle has two wheels.", True),
        ("Do cats have whiskers?", "Yes. Cats have no whiskers.", True),
        ("Is a banana a vegetable?", "No. A banana is a fruit.", False),
        ("Is the Earth a star?", "No. Stars are not planets.", False),
        ("Do ducks have fur?", "No. Ducks have no fur.", False),
        ("Is fire hot?", "Yes. Fire is hot.", False),
        ("Is fire cold?", "No.", False),
        (
            "Is the Sun a planet?",
            "No. The Sun is a planet.",
            False,
        ),  # the check's question: not ours to judge
    ],
)
def test_a_yes_or_no_that_the_reply_then_denies_is_not_trained_on(prompt, reply, contradicts):
    assert improve.contradicts(prompt, reply) is contradicts
    sample = conformance.Reply("x", 1, reply, 8, stopped=True, runaway=False)
    assert (improve.judged(prompt, sample) == "right answer, reply contradicts itself") is contradicts


def test_yes_no_pairs_are_as_many_yes_as_no():
    """runs/qs-rpo3-unbalanced: 36 yes/no pairs answered yes to 12 answered no, and the round answered every
    no-question of the check yes. Pairs of the other kinds are all kept."""
    yes = ["Is fire hot?", "Is a hammer a tool?", "Is the Earth round?"]
    samples = [_sample(COIN, "25", None), _sample(COIN, "52", "wrong arithmetic")]
    for q in yes:
        samples += [_sample(q, "Yes. It is.", None), _sample(q, "No. It is.", "wrong yes/no")]
    samples += [
        _sample("Is fire cold?", "No. Fire is hot.", None),
        _sample("Is fire cold?", "Yes.", "wrong yes/no"),
    ]
    for s in samples:
        s["kind"] = "arithmetic" if s["prompt"] == COIN else "yes/no"
    pairs, counts = improve.pairs_of(samples, most=2)
    asked = [p["prompt"][0]["content"] for p in pairs]
    assert asked == [COIN, yes[0], "Is fire cold?"], asked
    assert counts["yes/no pairs dropped to balance yes and no"] == 2 and counts["pairs"] == 3


LOOPER, LIKES, HELLO = "How was your day?", "Do you like dogs?", "Hi there"
SURE_LOOP = "I am not sure. I am not sure. I am not sure."


@pytest.fixture(scope="module")
def rambler(tmp_path_factory):
    """A tiny model whose greedy reply to LOOPER says one sentence three times (once, a quarter of the time), and
    which answers LIKES and HELLO cleanly."""
    taught = [(LOOPER, SURE_LOOP)] * 3 + [(LOOPER, "I am not sure."), (LIKES, "Yes, I like dogs a lot."),
                                          (HELLO, "Hello!")]  # fmt: skip
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in taught
    ]
    texts = [t for q, a in taught for t in (q, a)] * 10 + CORPUS
    path = _learnt_gemma(texts, 300, 256, 128, rows, 150, 3e-3, tmp_path_factory.mktemp("rambler"))
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_a_reply_said_again_is_a_loop_and_the_reply_is_not():
    for reply in ("I am not sure.", "Well. I went to the lake today", "Sure! We went swimming at the lake"):
        again = improve_chat.said_again(reply)
        assert again.startswith(reply) and not conformance.repeats_sentence(reply), again
        assert conformance.repeats_sentence(again) and len(again) > 2 * len(reply), again
    assert improve_chat.said_again("I am not sure.") == SURE_LOOP
    assert improve_chat.said_again("Hello!") is None  # no sentence of 3 words to say again


def test_chat_pairs_reject_loops_and_choose_clean_replies(rambler):
    model, tok = rambler
    cfg_args = [
        "template.temperature=0.8",
        "template.top_p=0.9",
        "improve.samples=16",
        "eval.max_new_tokens=24",
    ]
    cfg = config.load(None, cfg_args)
    asked = [
        {"id": q, "prior_turns": 1, "messages": [{"role": "user", "content": q}]}
        for q in (LOOPER, LIKES, HELLO)
    ]
    pairs, samples, counts = improve_chat.pairs(model, tok, asked, cfg, seed=0)
    assert [s["loop"] for s in samples] == [True, False, False], samples
    got = [(p["prompt"][0]["content"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs]
    assert got == [
        (LOOPER, "I am not sure.", SURE_LOOP),  # its own loop, against a clean sample
        (LIKES, "Yes, I like dogs a lot.", "Yes, I like dogs a lot. " * 2 + "Yes, I like dogs a lot."),
    ]
    assert counts == {"greedy loops, against a clean sample": 1, "clean greedy, against itself said again": 1,
                      "clean greedy, no sentence to repeat": 1, "chat pairs": 2}  # fmt: skip
    assert {p["kind"] for p in pairs} == {"chat"}
    # a pair TRL would cut at data.max_length (keep_start) is not made: its repeated tail would be lost
    again = [{"role": "user", "content": LIKES}, {"role": "assistant", "content": got[1][2]}]
    longest = len(tok.apply_chat_template(again, tokenize=True, return_dict=True)["input_ids"])
    for limit, made in ((longest, 2), (longest - 1, 1)):
        cut = config.load(None, [*cfg_args, f"data.max_length={limit}"])
        pairs, _, counts = improve_chat.pairs(model, tok, asked, cut, seed=0)
        assert len(pairs) == made and counts["chat pairs"] == made, (limit, counts)
    assert counts["pair longer than data.max_length (TRL would cut its tail)"] == 1, counts


def test_chat_prompts_come_from_the_training_side_only(chat_file, taught):
    cfg = config.load(None, [f"data.sources=[{{path: {chat_file}}}]", "data.eval_share=0.5", "data.seed=3"])
    tok = taught[1]
    asked = improve_chat.prompts(cfg, tok, 100, seed=1)
    held = {f"0:c{i}" for i in range(24) if splits.held_out(f"0:c{i}", 3, 0.5)}
    multi = {f"0:c{i}" for i in range(24) if i % 3}  # 2 or 3 exchanges
    assert asked and {p["id"] for p in asked} == multi - held, (asked, held)
    for p in asked:  # cut before a reply, after 1 or 3 turns
        assert p["messages"][-1]["role"] == "user" and p["prior_turns"] == len(p["messages"]) in (1, 3, 5)
    assert (
        improve_chat.prompts(cfg, tok, 3, seed=1)
        == improve_chat.prompts(cfg, tok, 3, seed=1)
        != improve_chat.prompts(cfg, tok, 3, seed=2)
    )


def test_chat_prompts_fit_the_token_limit_and_hold_special_text_out(tmp_path, taught):
    """As the held-out prompts: a reply counts only where the conversation so far fits data.max_length, and a row
    SFT rejects for typed control tokens is never asked."""
    say = lambda *texts: [{"role": r, "content": t} for r, t in zip(["user", "assistant"] * 3, texts)]  # noqa: E731
    rows = [{"id": f"short{i}", "messages": say(*CORPUS[i : i + 6])} for i in range(3)]
    rows += [{"id": f"long{i}", "messages": say(CORPUS[i], CORPUS[i + 1], "tell me more " * 150, *CORPUS[:3])}
             for i in range(3)]  # fmt: skip
    rows += [{"id": "typed", "messages": say(CORPUS[0], "Sure.<|im_end|>", *CORPUS[1:5])}]
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config.load(
        None, [f"data.sources=[{{path: {path}}}]", "data.eval_share=0.01", "data.max_length=256"]
    )
    ids = {f"0:{k}{i}" for k in ("short", "long") for i in range(3)}
    assert not any(splits.held_out(i, cfg.data.seed, 0.01) for i in ids | {"0:typed"})
    turns = {}
    for seed in range(3):  # each conversation is asked after 1, 3 and 5 turns across the seeds
        turns |= {p["id"]: turns.get(p["id"], set()) | {p["prior_turns"]}
                  for p in improve_chat.prompts(cfg, taught[1], 10, seed)}  # fmt: skip
    assert set(turns) == ids, turns
    assert all(turns[f"0:long{i}"] == {1} for i in range(3)), turns  # 3 or 5 turns cross max_length
    assert set().union(*(turns[f"0:short{i}"] for i in range(3))) == {1, 3, 5}, turns


def test_each_step_draws_its_pairs_and_runs_them_longest_first():
    from instructify.training import dpo

    lengths = [5, 40, 7, 33, 9, 128, 12, 3, 60, 21]
    order = dpo.step_order(lengths, step_size=4, steps=5, seed=0)
    steps = [order[s * 4 : (s + 1) * 4] for s in range(5)]
    assert len(set(order[:8])) == 8 and sorted(order) == sorted(list(range(10)) * 2)  # two shuffled epochs
    assert all([lengths[j] for j in s] == sorted((lengths[j] for j in s), reverse=True) for s in steps)
    assert order != dpo.step_order(lengths, 4, 5, seed=1) and order == dpo.step_order(lengths, 4, 5, seed=0)


def test_micro_batches_keep_each_steps_pairs_and_pad_less(taught_model):
    """improve.micro_batches=2: a step trains on the same pairs as in one batch, the long ones together, and the
    short half is padded to its own length."""
    from instructify.training import dpo

    tok = AutoTokenizer.from_pretrained(taught_model)
    pairs = [{"prompt": [{"role": "user", "content": COIN + " Say it" + " again" * n}],
              "chosen": [{"role": "assistant", "content": "25"}],
              "rejected": [{"role": "assistant", "content": "52" + " 52" * n}]} for n in range(8)]  # fmt: skip
    common = ["improve.method=rpo", "training.max_steps=2", "training.per_device_batch_size=4", "lora.r=4"]
    batches = {}
    for micro in (1, 2):
        cfg = config.load(None, [*common, f"improve.micro_batches={micro}"])
        trainer = dpo.trainer_for(cfg, AutoModelForCausalLM.from_pretrained(taught_model), tok, pairs)
        assert trainer.args.gradient_accumulation_steps == micro
        batches[micro] = list(trainer.get_train_dataloader())
    one, two = batches[1], batches[2]
    width = lambda b: b["input_ids"].shape[1]
    unpadded = lambda *bs: sorted(
        tuple(r[m.bool()].tolist()) for b in bs for r, m in zip(b["input_ids"], b["attention_mask"])
    )
    assert [len(b["input_ids"]) for b in one] == [8, 8] and [len(b["input_ids"]) for b in two] == [4] * 4
    for step in range(2):  # (chosen and rejected rows of each pair)
        long, short = two[2 * step], two[2 * step + 1]
        assert width(short) < width(long) == width(one[step])
        assert unpadded(one[step]) == unpadded(long, short)
    with pytest.raises(config.ConfigError, match="improve.micro_batches"):
        config.load(None, ["training.per_device_batch_size=4", "improve.micro_batches=3"])
