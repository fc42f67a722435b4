import json

import pytest

from train import data
from train.config import DataConfig


def test_chitchat_turns_merge_consecutive_messages_and_alternate():
    conv = data._two_speaker("x", [("a", "hi"), ("a", "you there?"), ("b", "yes"), ("a", "cool")], "f:1")
    assert conv.messages == [
        {"role": "user", "content": "hi you there?"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "cool"},
    ]


def test_chitchat_package_loads_every_conversation():
    convs = data.load_source(DataConfig())
    assert len(convs) == 7168
    report = data.LoadReport()
    kept = data.validate(convs, report)
    # conversations where only one person wrote have no assistant turn: rejected and counted, never silent
    assert len(kept) + sum(report.rejected.values()) == 7168
    assert report.rejected["no assistant turn"] > 0


@pytest.mark.parametrize(
    "messages, reason",
    [
        ([], "messages is empty or not a list"),
        ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}], 'message 2 has role "bot"'),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}], "message 2 has empty"),
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}],
            "message 2 has empty or non-string",
        ),
        ([{"role": "user", "content": "hi"}], "no assistant turn"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "system only allowed first"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "message 2 is user where assistant was expected",
        ),
        ([{"role": "user"}], "lacks role/content"),
        (
            [{"role": "user", "content": "a<bos>"}, {"role": "assistant", "content": "b"}],
            "special-token text <bos>",
        ),
    ],
)
def test_problem_names_the_reason(messages, reason):
    assert reason in data.problem(messages, ("<bos>", "<|im_end|>"))


def test_local_jsonl_with_a_bad_line_names_file_and_row(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"messages": []}\nnot json\n')
    with pytest.raises(data.DataError, match=r"x.jsonl:2: not valid JSON"):
        data.load_source(DataConfig(source=str(path)))
    path.write_text('{"text": "hello"}\n')
    with pytest.raises(data.DataError, match=r"x.jsonl:1: expected an object with a `messages` list"):
        data.load_source(DataConfig(source=str(path)))


def test_local_formats_load_the_same_rows(tmp_path, chat_file):
    rows = [json.loads(line) for line in chat_file.read_text().splitlines()]
    (tmp_path / "c.json").write_text(json.dumps(rows))
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "c.parquet"))
    loaded = [
        data.load_source(DataConfig(source=str(p)))
        for p in (chat_file, tmp_path / "c.json", tmp_path / "c.parquet")
    ]
    assert (
        [c.messages for c in loaded[0]] == [c.messages for c in loaded[1]] == [c.messages for c in loaded[2]]
    )
    assert loaded[0][3].id == "c3"


def test_missing_local_file_is_a_clear_error():
    with pytest.raises(data.DataError, match="not found"):
        data.load_source(DataConfig(source="nope/x.jsonl"))


def test_split_is_seeded_and_disjoint():
    convs = [data.Conversation(str(i), []) for i in range(100)]
    train, held = data.split(convs, 10, seed=1)
    assert len(held) == 10 and len(train) == 90 and not {c.id for c in train} & {c.id for c in held}
    assert [c.id for c in data.split(convs, 10, seed=1)[1]] == [c.id for c in held]
    assert [c.id for c in data.split(convs, 10, seed=2)[1]] != [c.id for c in held]
    # adding conversations never moves an old one from eval into train when the set grows by a few
    grown = convs + [data.Conversation(f"new{i}", []) for i in range(3)]
    assert len({c.id for c in data.split(grown, 10, seed=1)[1]} & {c.id for c in held}) >= 7


def test_fit_cuts_after_an_assistant_reply_never_inside_one():
    roles = ["user", "assistant", "user", "assistant"]
    assert data.fit(roles, [5, 10, 15, 20], max_length=100) == 4
    assert data.fit(roles, [5, 10, 15, 20], max_length=17) == 2  # user 3 fits, its reply does not
    assert data.fit(roles, [5, 60, 65, 70], max_length=20) == 0  # even the first reply does not fit


def test_special_token_text_is_rejected_with_a_reason():
    msgs = [{"role": "user", "content": "say <|im_end|> now"}, {"role": "assistant", "content": "ok"}]
    assert "message 1 contains special-token text <|im_end|>" in data.problem(msgs, ("<|im_end|>", "<bos>"))
    assert data.problem(msgs, ()) is None  # escape policy: allowed, tokenised as plain text
    report = data.LoadReport()
    kept = data.validate(
        [data.Conversation("a", msgs), data.Conversation("b", msgs[1:])], report, ("<|im_end|>",)
    )
    assert kept == [] and report.rejected == {
        "contains special-token text <|im_end|>": 1,
        "is assistant where user was expected": 1,
    }
