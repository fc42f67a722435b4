"""Headroom (instructify/evals/headroom.py): greedy pass@1 and sampled pass@k per prompt, on a tiny model that
has learnt one right answer, one answer right half the time, and one wrong answer (conftest's taught_model)."""

from __future__ import annotations

import re

import pytest
from conftest import COIN, SURE, WRONG
from transformers import AutoModelForCausalLM, AutoTokenizer

from instructify.evals import checkable, headroom, instructions


@pytest.fixture(scope="module")
def taught(taught_model):
    return AutoModelForCausalLM.from_pretrained(taught_model), AutoTokenizer.from_pretrained(taught_model)


def test_pass_at_k_counts_a_prompt_right_once_any_sample_is(taught):
    model, tok = taught
    asked = [("arithmetic", SURE), ("arithmetic", COIN), ("list", WRONG)]
    got = headroom.measure(model, tok, asked, 8, {"do_sample": True, "temperature": 1.0, "top_p": 1.0}, 8, 4)
    sure, coin, wrong = got["rows"]
    assert (sure["greedy"], sure["sampled_right"]) == (True, 8), sure
    assert 0 < coin["sampled_right"] < 8 and coin["greedy"] == (coin["greedy_reply"] == "25"), coin
    assert (wrong["greedy"], wrong["sampled_right"]) == (False, 0), wrong
    arithmetic = got["by_kind"]["arithmetic"]
    assert arithmetic["pass_at_8"] == 1.0 and arithmetic["greedy"] == (1 + coin["greedy"]) / 2
    assert got["by_kind"]["list"]["pass_at_8"] == 0.0 and got["overall"]["pass_at_8"] == pytest.approx(2 / 3)
    assert got["overall"]["sampled"] == pytest.approx((8 + coin["sampled_right"]) / 24)
    assert headroom.right(SURE, "19", True) and not headroom.right(
        SURE, "19", False
    )  # a round keeps what ends


def test_the_prompts_are_checkable_distinct_and_apart_from_the_check():
    asked = headroom.prompts(25, 50, seed=7)
    checks = instructions.items(per_kind=50)
    assert {k for k, _ in asked} == {*checkable.TEMPLATED, "yes/no"} == set(checkable.ROUND_KINDS)
    assert all(sum(k == kind for k, _ in asked) == 25 for kind in checkable.ROUND_KINDS)
    assert len({p for _, p in asked}) == len(asked)
    assert not [p for k, p in asked if instructions.touches(p, checks) or not checkable.checkable(k, p)]
    assert headroom.prompts(25, 50, seed=7) == asked != headroom.prompts(25, 50, seed=8)
    # improve.kinds picks some: the same prompts of those kinds as when all are asked
    assert headroom.prompts(25, 50, 7, ["list", "yes/no"]) == [
        (k, p) for k, p in asked if k in ("list", "yes/no")
    ]


def _phrasing(prompt: str) -> str:
    """A prompt with what it asks about taken out: its phrasing."""
    numbers = "|".join(checkable.NUMBERS.values())
    out = re.sub(r"\d+ ?(plus|minus|times|\+|-|×|\*) ?\d+", "{a} {op} {b}", prompt)
    out = re.sub(r"(?<!\w)'[^']+'", "'{}'", out)
    out = re.sub(r"\b(Spanish|French|German|Italian)\b", "{}", out)
    out = re.sub(r"\bof [^?.]+([?.])$", r"of {}\1", out) if "capital" in out else out
    return re.sub(rf"\b({numbers}) [^?.,]+", "{} {}", out) if not re.search(r"\d", prompt) else out


def test_varied_phrasings_are_none_of_the_checks_and_their_replies_are_judged():
    from instructify.evals import second_set

    varied = headroom.prompts(40, 50, seed=7, kinds=checkable.TEMPLATED, varied=True)
    assert [k for k, _ in varied] == [k for k, _ in headroom.prompts(40, 50, 7, checkable.TEMPLATED)]
    ours = {_phrasing(p) for _, p in varied}
    assert len(ours) == sum(map(len, checkable.ROUND_ASKED.values()))  # every phrasing drawn, each recognised
    checks = {_phrasing(i.prompt) for i in [*instructions.items(), *second_set.items()] if i.kind != "yes/no"}
    assert len(checks) == 2 + 3 + 3 + 3 + 4 * 4 and not ours & checks  # the check's and the second set's
    for kind, p in varied:
        assert checkable.checkable(kind, p) and not instructions.touches(p, instructions.items())
        right = {"arithmetic": checkable.arithmetic_result, "capital": checkable.capital_answer,
                 "translate": checkable.translation_answer}.get(kind)  # fmt: skip
        if kind == "list":
            n = next(k for k, w in checkable.NUMBERS.items() if f" {w} " in p)
            assert checkable.wrong(p, ", ".join(f"thing{j}" for j in range(n)) + ".") is None, p
            assert (
                checkable.wrong(p, ", ".join(f"thing{j}" for j in range(n + 1)) + ".") in checkable.WRONG
            ), p
        else:
            assert (
                checkable.wrong(p, f"{right(p)}.") is None and checkable.wrong(p, "Oslo.") in checkable.WRONG
            ), p


def test_improve_kinds_are_the_kinds_a_round_can_ask():
    from instructify import config

    assert config.ROUND_KINDS == checkable.ROUND_KINDS
    assert config.load(None).improve.kinds == list(checkable.TEMPLATED)
    with pytest.raises(
        config.ConfigError, match="`improve.kinds` has \\['lists'\\]; expected some of arithmetic"
    ):
        config.load(None, ["improve.kinds=[lists]"])


def test_the_command_writes_headroom_json_for_a_model_folder(chat_model, tmp_path, capsys):
    import json

    from instructify import cli

    argv = ["headroom", "--model", str(chat_model), "--per-kind", "2", "--k", "2", f"output_dir={tmp_path}"]
    assert cli.main(argv) == 0
    entry = json.loads((tmp_path / "headroom.json").read_text())["trained"]
    assert {k: s["n"] for k, s in entry["by_kind"].items()} == dict.fromkeys(checkable.ROUND_KINDS, 2)
    assert (
        entry["k"] == 2
        and entry["model"] == str(chat_model)
        and "| trained | 2 | all | 10 |" in capsys.readouterr().out
    )
    assert cli.main(["headroom", "--model", str(tmp_path / "nope"), f"output_dir={tmp_path}"]) == 2
