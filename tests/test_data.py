import json

import pytest

from instructify.config import DataConfig, SourceConfig
from instructify.data import formats, mixture, records, splits, validate

CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def load(tmp_path, rows, name="d.jsonl", special=("<|im_end|>",), **cfg):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    sources = cfg.pop("sources", [SourceConfig(path=str(path))])
    report = records.LoadReport()
    return mixture.load(DataConfig(sources=sources, **cfg), special, report), report


# ---- formats -------------------------------------------------------------------------------------------------

FORMATS = {
    "messages": {"messages": CHAT},
    "messages_with_name": {"messages": [{"role": "user", "content": "hi", "name": "bo"}, CHAT[1]]},
    "sharegpt": {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    "sharegpt_variants": {
        "conversations": [{"from": "user", "value": "hi"}, {"from": "chatgpt", "value": "hello"}]
    },
    "alpaca": {"instruction": "hi", "output": "hello"},
    "prompt_completion": {"prompt": "hi", "completion": "hello"},
    "prompt_completion_lists": {"prompt": [CHAT[0]], "completion": [CHAT[1]]},
    "two_speaker": {"turns": [{"speaker": "a", "text": "hi"}, {"speaker": "b", "text": "hello"}]},
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_is_detected_and_converted(tmp_path, name):
    convs, report = load(tmp_path, [FORMATS[name]])
    assert [c.messages for c in convs] == [CHAT] and report.read == 1 and not report.rejected


def test_alpaca_input_and_system():
    row = {"instruction": "Sum", "input": "1 2", "output": "3", "system": "Be exact."}
    assert formats.to_messages(row, "auto", {}) == [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "Sum\n\n1 2"},
        {"role": "assistant", "content": "3"},
    ]


def test_column_mapping_and_explicit_format(tmp_path):
    rows = [
        {"dialog": [{"speaker_role": "user", "text": "hi"}, {"speaker_role": "assistant", "text": "hello"}]}
    ]
    src = SourceConfig(
        path=str(tmp_path / "d.jsonl"),
        format="messages",
        columns={"messages": "dialog", "role": "speaker_role", "content": "text"},
    )
    convs, _ = load(tmp_path, rows, sources=[src])
    assert [c.messages for c in convs] == [CHAT]


def test_two_speaker_merges_consecutive_messages_and_alternates():
    row = {
        "turns": [
            {"speaker": "a", "text": "hi"},
            {"speaker": "a", "text": "you there?"},
            {"speaker": "b", "text": "yes"},
            {"speaker": "a", "text": "cool"},
        ]
    }
    assert formats.to_messages(row, "two_speaker", {}) == [
        {"role": "user", "content": "hi you there?"},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "cool"},
    ]


def test_chitchat_package_loads_every_conversation():
    report = records.LoadReport()
    convs = mixture.load(DataConfig(), (), report)
    assert report.read == 7168 and len(convs) + sum(report.rejected.values()) == 7168
    # conversations where only one person wrote have no assistant turn: rejected and counted, never silent
    assert report.rejected["no assistant turn"] > 3000


# ---- sources -------------------------------------------------------------------------------------------------


def test_every_file_type_folder_and_glob_give_the_same_rows(tmp_path):
    import datasets

    rows = [
        {"id": i, "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(3)
    ]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "b.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "c.parquet"))
    with (tmp_path / "d.csv").open("w") as f:
        f.write(
            "id,messages\n"
            + "".join(
                f'{r["id"]},"{json.dumps(r["messages"]).replace(chr(34), chr(34) * 2)}"\n' for r in rows
            )
        )
    expected = [r["messages"] for r in rows]
    for path in (
        folder / "a.jsonl",
        tmp_path / "b.json",
        tmp_path / "c.parquet",
        tmp_path / "d.csv",
        folder,
        tmp_path / "in" / "*.jsonl",
    ):
        report = records.LoadReport()
        convs = mixture.load(DataConfig(sources=[SourceConfig(path=str(path))]), (), report)
        assert [c.messages for c in convs] == expected, path


def test_csv_alpaca(tmp_path):
    (tmp_path / "a.csv").write_text("instruction,input,output\nAdd,1 2,3\nHi,,Hello\n")
    convs, _ = load(tmp_path, [], sources=[SourceConfig(path=str(tmp_path / "a.csv"))])
    assert [c.messages[0]["content"] for c in convs] == ["Add\n\n1 2", "Hi"]


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(records.DataError, match="no such file, folder or glob match"):
        mixture.load(
            DataConfig(sources=[SourceConfig(path=str(tmp_path / "nope.jsonl"))]), (), records.LoadReport()
        )


def test_weights_mix_sources(tmp_path):
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"messages": CHAT}) + "\n" for _ in range(10)))
    b.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "x"}) + "\n" for i in range(10)))
    cfg = DataConfig(sources=[SourceConfig(path=str(a), weight=2.0), SourceConfig(path=str(b), weight=0.5)])
    convs = mixture.load(cfg, (), records.LoadReport())
    assert sum(c.id.startswith("0:") for c in convs) == 20 and sum(c.id.startswith("1:") for c in convs) == 5
    assert [c.id for c in mixture.load(cfg, (), records.LoadReport())] == [c.id for c in convs]  # seeded


# ---- validation ----------------------------------------------------------------------------------------------


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
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
            "system is only allowed first",
        ),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            "message 2 is user where assistant",
        ),
        ([{"role": "assistant", "content": "a"}], "message 1 is assistant where user was expected"),
        ([{"role": "user"}], "lacks role/content"),
        (
            [{"role": "user", "content": "a<bos>"}, {"role": "assistant", "content": "b"}],
            "special-token text <bos>",
        ),
    ],
)
def test_problem_names_the_reason(messages, reason):
    assert reason in validate.problem(messages, ("<bos>", "<|im_end|>"))


@pytest.mark.parametrize(
    "messages, index, field",
    [
        ([], None, None),
        ([{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}], 1, "role"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}], 1, "content"),
        ([{"role": "user", "content": "a<bos>"}, {"role": "assistant", "content": "b"}], 0, "content"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], 1, "role"),
        ([{"role": "user"}], 0, "content"),
        ([{"content": "hi"}], 0, "role"),
        (["hi"], 0, None),
        ([{"role": "user", "content": "hi"}], None, None),
    ],
)
def test_check_messages_names_the_message_and_field(messages, index, field):
    found = validate.check_messages(messages, ("<bos>",))
    assert (found.index, found.field) == (index, field)
    assert str(found) == validate.problem(messages, ("<bos>",))


def test_a_prompt_ends_on_the_users_message_and_needs_no_reply():
    user, reply = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}
    assert validate.check_messages([user], prompt=True) is None
    assert validate.check_messages([user, reply, user], prompt=True) is None
    assert "must end with the user's" in validate.check_messages([user, reply], prompt=True).reason
    assert validate.check_messages([user, reply]) is None  # training data: a reply to learn


def test_rejections_are_counted_written_and_named_by_file_and_row(tmp_path):
    rows = [
        {"messages": CHAT},
        "not json",
        {"messages": [CHAT[0], {"role": "bot", "content": "x"}]},
        {"text": "x"},
    ]
    convs, report = load(tmp_path, rows, max_rejected=1.0)
    assert len(convs) == 1 and report.read == 4
    assert report.rejected == {
        'has role "bot"': 1,
        "not valid JSON (Expecting value)": 1,
        "cannot tell the format from keys ['text']": 1,
    }
    report.write_rejected(tmp_path / "rejected.jsonl")
    written = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert [w["where"] for w in written] == [f"{tmp_path}/d.jsonl:{i}" for i in (2, 3, 4)]
    assert written[1]["reason"] == 'message 2 has role "bot"; expected one of system, user, assistant'
    with pytest.raises(records.DataError, match=r"75% of 4 rows rejected \(limit data.max_rejected=10%\)"):
        mixture.check_rejected(report, 0.1, "d.jsonl")


def test_consecutive_same_role_merge_or_reject(tmp_path):
    rows = [{"messages": [CHAT[0], CHAT[0], CHAT[1]]}]
    convs, report = load(tmp_path, rows)
    assert convs[0].messages[0]["content"] == "hi\nhi" and report.merged == 1
    convs, report = load(tmp_path, rows, consecutive="reject", max_rejected=1.0)
    assert convs == [] and report.rejected == {"is user where assistant was expected": 1}


def test_special_token_text_is_rejected_with_a_reason():
    msgs = [{"role": "user", "content": "say <|im_end|> now"}, {"role": "assistant", "content": "ok"}]
    assert "message 1 contains special-token text <|im_end|>" in validate.problem(
        msgs, ("<|im_end|>", "<bos>")
    )
    assert validate.problem(msgs, ()) is None  # escape policy: allowed, tokenised as plain text


# ---- split and length ----------------------------------------------------------------------------------------


def test_split_is_seeded_disjoint_and_stable_when_rows_are_appended():
    convs = [records.Conversation(str(i), []) for i in range(1000)]
    train, held = splits.split(convs, 0.1, seed=1)
    assert 60 < len(held) < 140 and len(train) + len(held) == 1000
    assert not {c.id for c in train} & {c.id for c in held}
    assert [c.id for c in splits.split(convs, 0.1, seed=1)[1]] == [c.id for c in held]
    assert [c.id for c in splits.split(convs, 0.1, seed=2)[1]] != [c.id for c in held]
    grown = convs + [records.Conversation(f"new{i}", []) for i in range(500)]
    train2, held2 = splits.split(grown, 0.1, seed=1)
    assert {c.id for c in held} <= {c.id for c in held2} and {c.id for c in train} <= {c.id for c in train2}


def test_fit_cuts_after_an_assistant_reply_never_inside_one():
    roles = ["user", "assistant", "user", "assistant"]
    assert splits.fit(roles, [5, 10, 15, 20], max_length=100) == 4
    assert splits.fit(roles, [5, 10, 15, 20], max_length=17) == 2  # user 3 fits, its reply does not
    assert splits.fit(roles, [5, 60, 65, 70], max_length=20) == 0  # even the first reply does not fit


class Enc:
    def __init__(self, ends):
        self.ends, self.input_ids, self.assistant_masks = ends, list(range(ends[-1])), [1] * ends[-1]


@pytest.mark.parametrize("policy, kept, messages", [("drop", 1, [2]), ("truncate", 2, [2, 2])])
def test_overlength_policies(policy, kept, messages):
    convs = [
        records.Conversation("a", [CHAT[0], CHAT[1]]),
        records.Conversation("b", [CHAT[0], CHAT[1], CHAT[0], CHAT[1]]),
    ]
    report = records.LoadReport()
    rows = splits.fit_all(convs, [Enc([3, 6]), Enc([3, 6, 9, 12])], 8, policy, report)
    assert len(rows) == kept and [len(r["messages"]) for r in rows] == messages
    assert (report.too_long, report.truncated) == ((1, 0) if policy == "drop" else (0, 1))
    assert all(len(r["input_ids"]) <= 8 for r in rows)
    with pytest.raises(records.DataError, match="12 tokens, over max_length=8"):
        splits.fit_all(convs, [Enc([3, 6]), Enc([3, 6, 9, 12])], 8, "error", report)


def test_eval_prompts_fit_max_length_and_vary_prior_turns():
    msgs = [CHAT[0], CHAT[1]] * 4  # 8 messages: replies at 1, 3, 5, 7
    convs = [records.Conversation(str(i), msgs) for i in range(3)] + [records.Conversation("long", msgs[:2])]
    encs = [Enc([5, 10, 15, 20, 25, 30, 35, 40])] * 3 + [Enc([50])]  # ends stop past max_length
    prompts = splits.eval_prompts(convs, encs, max_length=40, seed=0)
    assert [p["prior_turns"] for p in prompts] == [1, 3, 5]  # the long one has no reply that fits: no prompt
    assert all(p["messages"][-1]["role"] == "user" and p["reference"] == "hello" for p in prompts)


def test_a_source_max_length_cuts_only_that_source(tmp_path):
    """Short chit-chat beside long tool rows: the chat source's own limit applies to its rows, in training and in
    the held-out prompts, and the others keep data.max_length."""
    msgs = [CHAT[0], CHAT[1]] * 2  # replies at 1 and 3
    for name in ("short", "long"):
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({"id": name, "messages": msgs}) + "\n")
    cfg = DataConfig(
        sources=[
            SourceConfig(path=str(tmp_path / "short.jsonl"), max_length=20),
            SourceConfig(path=str(tmp_path / "long.jsonl")),
        ],
        max_length=64,
    )
    convs = mixture.load(cfg, (), records.LoadReport())
    assert [c.max_length for c in convs] == [20, None]
    encs = [Enc([5, 10, 30, 40])] * 2
    report = records.LoadReport()
    rows = splits.fit_all(convs, encs, cfg.max_length, "truncate", report)
    assert [len(r["messages"]) for r in rows] == [2, 4] and report.truncated == 1
    prompts = splits.eval_prompts(convs, encs, cfg.max_length, seed=1)  # wants 3, then 5, prior turns
    assert [p["prior_turns"] for p in prompts] == [1, 3]


def test_tool_conversations_give_no_chat_prompt(tmp_path, caplog):
    """Held-out tool rows are the tool check's: as chat prompts they crowd out chat (tools first in the mix) and
    parallel calls run past the chat budget."""
    call = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}],
    }
    numbers = {"a": {"type": "integer"}, "b": {"type": "integer"}}
    add = {"name": "add", "description": "Add.", "parameters": {"type": "object", "properties": numbers}}
    path = tmp_path / "mix.jsonl"
    rows = [{"id": "tool", "tools": [add], "messages": [CHAT[0], call]}, {"id": "chat", "messages": CHAT[:2]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    convs = mixture.load(DataConfig(sources=[SourceConfig(path=str(path))]), (), records.LoadReport())
    assert [(c.id, c.tools) for c in convs] == [("0:tool", True), ("0:chat", False)]
    with caplog.at_level("INFO"):
        prompts = splits.eval_prompts(convs, [Enc([30, 40]), Enc([5, 10])], max_length=64, seed=0)
    assert [p["id"] for p in prompts] == ["0:chat"]
    assert "1 tool conversations left to the tool check" in caplog.text
