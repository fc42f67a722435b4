"""`train synth`: prompts deduplicated and kept apart from the instruction check, replies filtered with counted
reasons, a JSONL the data stage reads, and its provenance."""

import json
from pathlib import Path

import pytest
from conftest import CORPUS

from instructify import cli, config
from instructify.data import mixture, records
from instructify.synth import prompts, replies, write


@pytest.mark.parametrize(
    "prompt, reply, ended, reason",
    [
        ("What is 23 plus 19?", "23 plus 19 is 42.", True, None),
        ("What is 23 plus 19?", "23 plus 19 is 41.", True, "wrong arithmetic"),
        ("Name a colour.", "", True, "empty"),
        ("Name a colour.", "Blue is a colour and", False, "unfinished"),
        ("Name a colour.", "Blue is nice. Blue is nice.", True, "repeated sentence or loop"),
        ("Name a colour.", "Blue.\n# Query:\nName another.", True, "template text"),
        ("Name a colour.", "Blue.<|im_end|>", True, "template text"),
        (
            "How do I make a cup of tea?",
            "How do I make a cup of tea? Boil water.",
            True,
            "restates the prompt",
        ),
        ("Name a colour.", "I'm sorry, I cannot help with that.", True, "refusal"),
        ("Translate 'good' into Polish.", "Good is translated to Polish as 'good'.", True, "untranslated"),
        ("Translate 'good' into Polish.", "'Good' in Polish is 'dobry'.", True, None),
    ],
)
def test_reply_filters(prompt, reply, ended, reason):
    assert replies.reply_problem(prompt, reply, ended, list(range(len(reply.split())))) == reason


def test_a_prompt_of_a_kind_there_to_be_right_must_be_checkable():
    assert prompts.prompt_problem("What is 144 divided by 12?", "arithmetic") is None
    assert (
        prompts.prompt_problem("What is 100 divided by 42?", "arithmetic")
        == "arithmetic prompt not checkable"
    )
    assert (
        prompts.prompt_problem("What is 13 less than 10?", "arithmetic") == "arithmetic prompt not checkable"
    )
    assert prompts.prompt_problem("Translate 'bird' into German.", "translate") is None
    assert prompts.prompt_problem("Translate 'the good news' into Spanish.", "translate") == (
        "translate prompt not checkable"
    )
    assert prompts.prompt_problem("Translate 'the good news' into Spanish.", "fact") is None


def test_reordered_preamble_keeps_the_header_and_reverses_the_examples():
    from instructify.chat import incontext

    preamble = incontext.load("data/synth/incontext.md")
    other = incontext.reordered(preamble)
    queries = lambda text: [q.split("```")[1] for q in text.split("# Query:\n")[1:]]
    assert other.split("# Query:\n")[0] == preamble.split("# Query:\n")[0]
    assert queries(other) == queries(preamble)[::-1] and len(queries(preamble)) >= 3
    assert other.endswith("```\n\n")


def test_seeds_file_errors_name_the_line(tmp_path):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("# a comment\nfact | Who wrote Hamlet?\npoetry | Write a poem.\n")
    with pytest.raises(prompts.SynthError, match=r"seeds.txt:3: expected `kind \| instruction`"):
        prompts.read_seeds(seeds)


def test_synth_with_an_instruct_generator_writes_what_the_data_stage_reads(
    tmp_path, tiny_config, chat_model, capsys
):
    prompts = tmp_path / "prompts.txt"
    lines = [CORPUS[0], CORPUS[2], CORPUS[4], CORPUS[0], "What is the capital of France?", CORPUS[6]]
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "synth" / "rows.jsonl"
    path = tiny_config("s")
    overrides = [
        f"synth.generator={chat_model}",
        f"synth.prompts={prompts}",
        f"synth.output={out}",
        "synth.max_new_tokens=16",
        "synth.batch_size=2",
        "synth.system_share=0.0",
        "synth.multi_turn_share=0.0",
    ]
    assert cli.main(["synth", "--config", str(path), *overrides]) == 0
    assert f"{out}: " in capsys.readouterr().out
    provenance = json.loads((out.parent / "rows.jsonl.provenance.json").read_text())
    assert provenance["prompts"] == {"kept": 4, "duplicate": 1, "touches the instruction check": 1}
    assert sum(provenance["replies"].values()) == 4  # every kept prompt answered and counted
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == provenance["rows"] == provenance["replies"].get("kept", 0) >= 3
    for row in rows:  # the tiny chat model has learnt each prompt's reply in the corpus
        user, assistant = row["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert assistant["content"] == CORPUS[CORPUS.index(user["content"]) + 1]
    assert provenance["generator"] == str(chat_model) and provenance["files"] == {
        str(prompts): write._sha(prompts)
    }
    report = records.LoadReport()
    cfg = config.load(path, [f"data.sources=[{{path: {out}}}]"])
    assert len(mixture.load(cfg.data, (), report)) == len(rows) and not report.rejected


def test_self_instruct_counts_every_generated_line(tmp_path, tiny_config):
    """The tiny base writes noise: whatever it writes is kept or dropped with a reason, and the counts add up."""
    cfg = config.load(tiny_config("s"), ["synth.num_prompts=8", "synth.batch_size=4"])
    from instructify.training.model import load

    model, tok = load(cfg.model)
    seeds = prompts.read_seeds(Path(cfg.synth.seeds))
    new, counts = prompts.self_instruct(model, tok, seeds, 8, 0, 4)
    assert counts["generated"] == sum(v for k, v in counts.items() if k not in ("generated", "kept")) + len(
        new
    )
    assert counts["kept"] == len(new) <= 8
    assert all(kind in prompts.KINDS for kind, _ in new)


def test_a_yes_no_answer_that_flips_with_the_examples_order_is_dropped(gemma_like):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma_like)
    asked = lambda text: [{"role": "user", "content": text}]
    conversations = [
        ("yesno", asked("Can ostriches fly?")),
        ("yesno", asked("Is ice cold?")),
        ("fact", asked("Why?")),
    ]

    def reply(convs, other_order=False, sampling=None):  # what the base says under each order of the examples
        said = {
            "Can ostriches fly?": ("Yes, they can.", "No, they cannot."),
            "Is ice cold?": ("Yes.", "Yes, it is."),
        }
        return [(said.get(c[-1]["content"], ("Because.", "Because."))[other_order], True) for c in convs]

    counts = replies.Counts()
    kept = replies.answer(conversations, reply, tok, counts, consistent=True)
    assert [m[0]["content"] for _, m in kept] == ["Is ice cold?", "Why?"]
    assert counts.replies == {"kept": 2, "yes/no differs with the examples reordered": 1}


@pytest.mark.parametrize("retries, kept", [(0, []), (3, ["17 plus 25 is 42."])])
def test_a_wrong_reply_is_sampled_again_and_the_first_right_one_kept(gemma_like, retries, kept):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma_like)
    conversations = [("arithmetic", [{"role": "user", "content": f"What is 17 plus {b}?"}]) for b in (25, 26)]
    tries = {"What is 17 plus 25?": iter(["17 plus 25 is 41.", "17 plus 25 is 43.", "17 plus 25 is 42."])}

    def reply(convs, other_order=False, sampling=None):  # greedy says 41; sampled tries say 43, then 42
        if sampling is None:
            return [("17 plus 25 is 41." if "25" in c[-1]["content"] else "It is 40.", True) for c in convs]
        assert sampling["do_sample"]
        return [(next(tries.get(c[-1]["content"], iter(["It is 44."]))), True) for c in convs]

    counts = replies.Counts()
    got = replies.answer(conversations, reply, tok, counts, retries=retries)
    assert [m[-1]["content"] for _, m in got] == kept
    assert counts.replies["wrong arithmetic"] == 2 - len(kept)  # each prompt counted once, by its last reason
    assert counts.replies["right on a sampled retry"] == len(kept)
