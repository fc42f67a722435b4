"""Offline tool-calling data (instructify/synth/tool_data.py): every row passes the row check, kinds all present,
held-out functions never in train, the same seed the same files, schemas described, no BFCL function names,
and the committed data/tools files what `write` makes with the defaults."""

from __future__ import annotations

import copy
import importlib.resources
import importlib.util
import json
import random
from pathlib import Path

import pytest

from instructify.chat import tools as chat_tools
from instructify.synth import functions, tool_data
from instructify.synth.functions import TOOLS, Tool

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "data" / "tools"
BFCL_COPY = Path(
    "/tmp/bfcl/x/bfcl_eval/data"
)  # an unpacked bfcl-eval wheel, where the package is not installed


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tools")
    return out, tool_data.write(out, n_train=240, n_heldout=80, seed=3)


def _stable(provenance: dict) -> dict:
    """The provenance less what depends on where and how fast it was written."""
    p = copy.deepcopy(provenance)
    p.pop("seconds")
    for f in p["outputs"].values():
        f.pop("path")
    return p


def test_every_written_row_passes_the_row_check(small):
    out, _ = small
    for split in ("train", "heldout"):
        for row in _rows(out / f"{split}.jsonl"):
            assert tool_data.row_problem(row) is None, row


def test_every_built_row_holds_its_gold_calls():
    for split in ("train", "heldout"):
        for row, gold in tool_data.build(split, 120, seed=1)[0]:
            assert tool_data.row_problem(row, gold) is None, row


def test_every_kind_is_in_both_files_in_its_share(small):
    _, provenance = small
    for split, n in (("train", 240), ("heldout", 80)):
        counts = provenance["by_kind"][split]
        assert sum(counts.values()) == provenance["outputs"][split]["rows"] == n
        shares = tool_data.SHARES[split]
        assert all(counts[k] > 0 and abs(counts[k] - n * share) < 1 for k, share in shares.items())


def _names(rows: list[dict]) -> set[str]:
    offered = {t["function"]["name"] for r in rows for t in r["tools"]}
    called = {c["function"]["name"] for r in rows for m in r["messages"] for c in m.get("tool_calls") or []}
    return offered | called


def test_held_out_functions_are_never_in_train(small):
    out, provenance = small
    held = set(functions.HELD_OUT)
    assert 0.15 <= len(held) / len(TOOLS) <= 0.25
    assert not _names(_rows(out / "train.jsonl")) & held
    assert _names(_rows(out / "heldout.jsonl")) <= held
    assert provenance["functions"]["held_out"] == sorted(held)


def test_the_generator_makes_no_row_the_check_refuses(small):
    """The check runs before writing, so a generator fault shows as dropped rows: only repeats may be dropped
    (a request drawn twice, or parallel calls that came out the same)."""
    _, provenance = small
    committed = json.loads((COMMITTED / "train.jsonl.provenance.json").read_text())
    for p in (provenance, committed):
        for split in ("train", "heldout"):
            assert set(p["dropped"][split]) <= {"duplicate request", "no distinct candidate"}, p["dropped"]


def test_no_request_is_written_twice(small):
    out, _ = small
    requests = [
        tool_data.normal(m["content"])
        for split in ("train", "heldout")
        for r in _rows(out / f"{split}.jsonl")
        for m in r["messages"]
        if m["role"] == "user"
    ]
    assert len(requests) == len(set(requests))


def test_the_same_seed_writes_the_same_files(tmp_path, small):
    out, provenance = small
    again = tool_data.write(tmp_path, n_train=240, n_heldout=80, seed=3)
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()
    assert _stable(again) == _stable(provenance)
    other = tool_data.write(tmp_path / "other", n_train=240, n_heldout=80, seed=4)
    assert (tmp_path / "other" / "train.jsonl").read_bytes() != (out / "train.jsonl").read_bytes()
    assert other["by_kind"] == provenance["by_kind"]


def test_every_schema_describes_its_function_and_each_parameter():
    for name in TOOLS:
        fn = tool_data.schema(name)["function"]
        assert fn["description"].endswith(".") and fn["description"].count(". ") == 0, name
        props = fn["parameters"]["properties"]
        assert 1 <= len(props) <= 5, name
        for param, s in props.items():
            assert s.get("description", "").strip(), f"{name}.{param}"
        assert set(fn["parameters"].get("required", [])) == set(TOOLS[name].required())


def _bfcl_functions() -> list[dict]:
    """Every function document in BFCL's data (the bfcl_eval package, else an unpacked copy)."""
    if importlib.util.find_spec("bfcl_eval") is not None:
        with importlib.resources.as_file(importlib.resources.files("bfcl_eval") / "data") as data:
            return _function_docs(Path(data))
    if BFCL_COPY.is_dir():
        return _function_docs(BFCL_COPY)
    pytest.skip("BFCL data not found: pip install --no-deps bfcl-eval==2026.3.23")


def _function_docs(data: Path) -> list[dict]:
    found: list[dict] = []

    def walk(o: object) -> None:
        if isinstance(o, dict):
            if isinstance(o.get("name"), str) and "parameters" in o:
                found.append(o)
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    for path in data.rglob("*.json"):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                walk(json.loads(line))
            except json.JSONDecodeError:
                continue
    return found


def test_no_function_is_named_or_described_as_a_bfcl_one():
    docs = _bfcl_functions()
    assert len(docs) > 1000
    names = set()
    for d in docs:  # BFCL writes some as module.function: each spelling counts
        n = d["name"].lower()
        names |= {n, n.replace(".", "_"), n.rsplit(".", 1)[-1]}
    descriptions = {str(d.get("description", "")).strip().lower() for d in docs}
    assert not {n.lower() for n in TOOLS} & names
    ours = {tool_data.schema(n)["function"]["description"].lower() for n in TOOLS}
    assert not ours & descriptions


def test_the_committed_files_are_what_write_makes_with_the_defaults(tmp_path):
    provenance = tool_data.write(tmp_path)
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (tmp_path / name).read_text() == (COMMITTED / name).read_text(), (
            f"data/tools/{name} is stale: python -m instructify.synth.tool_data --out data/tools"
        )
    committed = json.loads((COMMITTED / "train.jsonl.provenance.json").read_text())
    assert _stable(committed) == _stable(provenance)
    assert committed["outputs"]["train"]["path"] == "data/tools/train.jsonl"


def test_the_committed_rows_are_short_and_a_quarter_have_a_system_message():
    committed = json.loads((COMMITTED / "train.jsonl.provenance.json").read_text())
    assert committed["chars"]["train"]["system_and_tools_under_1600"] >= 0.9
    share = committed["outputs"]["train"]["with_system"] / committed["outputs"]["train"]["rows"]
    assert 0.2 <= share <= 0.3


def test_a_two_step_result_is_the_fake_function_run_on_the_call():
    for row, _ in tool_data.build("train", 200, seed=2)[0]:
        if row["kind"] == "two_step":
            call, result = row["messages"][-3]["tool_calls"][0]["function"], row["messages"][-2]
            assert json.loads(result["content"]) == TOOLS[call["name"]].fn(**call["arguments"])


# ---- the check itself: each planted fault is caught ----


def _first(kind: str) -> tuple[dict, dict]:
    return next((r, g) for r, g in tool_data.build("train", 60, seed=0)[0] if r["kind"] == kind)


def _call_of(row: dict) -> dict:
    return next(m for m in row["messages"] if m.get("tool_calls"))["tool_calls"][0]["function"]


def _unmentioned_optional(row: dict, gold: dict) -> None:
    fn = _call_of(row)
    t = TOOLS[fn["name"]]
    extra = next(p for p in t.params() if p not in fn["arguments"])
    request = next(m["content"] for m in row["messages"] if m["role"] == "user")
    values = (tool_data.sample_values(t, random.Random(seed))[extra] for seed in range(9, 99))
    # a value the request does not happen to say already (guests=2 in "for 2 nights")
    fn["arguments"][extra] = (
        True if t.hint(extra) is bool else next(v for v in values if not tool_data.found_in(v, request))
    )


FAULTS = {
    "calls a function not offered": lambda r, g: _call_of(r).update(name="weather_of_mars"),
    "arguments break the schema: wrong type": lambda r, g: _call_of(r)["arguments"].update(
        {next(iter(_call_of(r)["arguments"])): {"a": "dict"}}
    ),
    "arguments break the schema: unknown argument": lambda r, g: _call_of(r)["arguments"].update(
        colour="red"
    ),
    "arguments break the schema: missing required": lambda r, g: _call_of(r)["arguments"].clear(),
    "argument not in the request": lambda r, g: r["messages"][-2 if r["kind"] != "two_step" else -4].update(
        content="Could you do the usual thing?"
    ),
    "calls differ from the gold calls": lambda r, g: g["calls"][0]["arguments"].update(extra=1),
    "results do not answer the calls in order": lambda r, g: r["messages"][-2].update(tool_call_id="call_9"),
    "two_step answer quotes nothing from the result": lambda r, g: r["messages"][-1].update(
        content="All done."
    ),
    "the reply does not name what is missing": lambda r, g: r["messages"][-1].update(
        content="Sure, what else?"
    ),
}
FAULT_KIND = {"results do not answer the calls in order": "two_step", "two_step answer quotes nothing from the result": "two_step",
              "the reply does not name what is missing": "missing"}  # fmt: skip


@pytest.mark.parametrize("reason", sorted(FAULTS))
def test_the_row_check_names_each_planted_fault(reason):
    kind = FAULT_KIND.get(reason, "single" if "request" in reason else "choose")
    row, gold = copy.deepcopy(_first(kind))
    assert tool_data.row_problem(row, gold) is None
    FAULTS[reason](row, gold)
    assert tool_data.row_problem(row, gold).startswith(reason)


def test_an_optional_argument_the_request_does_not_say_is_caught():
    for row, gold in tool_data.build("train", 200, seed=5)[0]:
        fn = _call_of(row) if row["kind"] in ("single", "choose") else None
        if fn and set(TOOLS[fn["name"]].params()) - set(fn["arguments"]):
            broken = copy.deepcopy(row)
            _unmentioned_optional(broken, gold)
            assert tool_data.row_problem(broken).startswith("argument not in the request"), broken


def test_found_in_reads_values_as_the_request_writes_them():
    text = 'Convert 2.5 km for Ana at 7:30pm on 2025-06-14, "See you at noon", tags eggs and feta'
    assert tool_data.found_in("ana", text) and tool_data.found_in("See you at noon", text)
    assert tool_data.found_in(2.5, text) and tool_data.found_in(2025, text)
    assert tool_data.found_in(["eggs", "feta"], text) and not tool_data.found_in(["eggs", "ham"], text)
    assert (
        not tool_data.found_in("An", text)
        and not tool_data.found_in(3, text)
        and not tool_data.found_in("", text)
    )
    assert tool_data.found_in(True, "go nonstop", ("nonstop",)) and not tool_data.found_in(
        True, "go", ("nonstop",)
    )


def test_a_template_that_does_not_fit_its_function_is_refused_at_import():
    def fn(city: str, days: int = 3) -> dict:
        """Say hello.

        Args:
            city: City.
            days: Days.
        """
        return {}

    for asks in (["Weather[ in {city}]?"], ["Weather in {town}?"], ["Weather, please."]):
        with pytest.raises(ValueError):
            functions.tool("weather", asks=asks, answers=["ok"], values={"city": ["Rome"], "days": [1]})(fn)
    assert "fn" not in TOOLS


def test_the_schema_check_agrees_with_jsonschema():
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    for row, _ in tool_data.build("train", 150, seed=6)[0]:
        offered = {t["function"]["name"]: t["function"]["parameters"] for t in row["tools"]}
        for m in row["messages"]:
            for c in m.get("tool_calls") or []:
                s = {**offered[c["function"]["name"]], "additionalProperties": False}
                args = c["function"]["arguments"]
                assert jsonschema_rs.is_valid(s, args)
                assert chat_tools.schema_problem(args, s) is None
                for bad in ({**args, "zzz": 1}, {k: {"o": 1} for k in args} if args else None):
                    if bad:
                        assert not jsonschema_rs.is_valid(s, bad)
                        assert chat_tools.schema_problem(bad, s)


def test_the_rows_meet_the_data_stage_rules_of_tool_use(small):
    validate = pytest.importorskip("instructify.data.validate")
    if not hasattr(validate, "check_tool_use"):
        pytest.skip("the data stage has no check of tool use here")
    out, _ = small
    for row in _rows(out / "train.jsonl"):
        assert validate.check_tool_use(row["messages"], row["tools"]) is None, row


def test_main_writes_the_files(tmp_path):
    provenance = tool_data.main(["--out", str(tmp_path), "--train", "30", "--heldout", "12", "--seed", "1"])
    assert provenance["outputs"]["train"]["rows"] == 30 and len(_rows(tmp_path / "heldout.jsonl")) == 12
    assert (tmp_path / "train.jsonl.provenance.json").is_file()


def _unmask(row: dict, inverse: dict) -> dict:
    row = copy.deepcopy(row)
    for t in row["tools"]:
        fn = t["function"]
        old, names = inverse[fn["name"]]
        params = fn["parameters"]
        fn["name"] = old
        params["properties"] = {names[p]: v for p, v in params["properties"].items()}
        if "required" in params:
            params["required"] = [names[p] for p in params["required"]]
    for m in row["messages"]:
        for call in m.get("tool_calls") or []:
            f = call["function"]
            old, names = inverse[f["name"]]
            f["name"], f["arguments"] = old, {names[k]: v for k, v in f["arguments"].items()}
        if m.get("role") == "tool":
            m["name"] = inverse[m["name"]][0]
    return row


def test_a_masked_row_renames_every_function_consistently_and_still_passes_the_row_check():
    rng = random.Random(0)
    renamed_params = 0
    for row, _ in tool_data.build("train", 120, seed=1)[0]:
        masked, inverse = tool_data.mask(row, rng)
        assert tool_data.row_problem(masked) is None, masked
        assert {t["function"]["name"] for t in masked["tools"]}.isdisjoint(TOOLS)
        renamed_params += sum(k != v for _, names in inverse.values() for k, v in names.items())
        assert _unmask(masked, inverse) == row
        descriptions = lambda r: [t["function"]["description"] for t in r["tools"]]  # noqa: E731
        assert descriptions(masked) == descriptions(row)
    assert renamed_params > 100


def test_the_written_train_file_masks_its_share_and_the_held_out_file_none(small):
    out, provenance = small
    share = sum(provenance["masked"].values()) / provenance["outputs"]["train"]["rows"]
    assert abs(share - tool_data.MASK_SHARE) < 0.1
    for split, limit in (("train", len(TOOLS)), ("heldout", 0)):
        unknown = {t["function"]["name"] for r in _rows(out / f"{split}.jsonl") for t in r["tools"]} - set(
            TOOLS
        )
        assert (len(unknown) > limit) if limit else not unknown


def _no_fit_rows(rows: list[tuple[dict, dict]]) -> list[tuple[Tool, list[Tool]]]:
    """(the wanted tool, the offered tools) of each built "no tool fits" row: the answer's {need} names the first."""
    out = []
    for row, _ in rows:
        answer = row["messages"][-1]["content"] or ""
        offered = [TOOLS[t["function"]["name"]] for t in row["tools"]]
        needs = [t for t in TOOLS.values() if t not in offered and tool_data.phrase(t) in answer]
        if row["kind"] == "no_tool" and needs:
            out.append((min(needs, key=lambda t: answer.index(tool_data.phrase(t))), offered))
    return out


def test_near_no_fit_rows_offer_the_wanted_tools_siblings_in_train_only(monkeypatch):
    plain = _no_fit_rows(tool_data.build("train", 300, seed=2)[0])
    assert plain and not any(functions.related(w.domain, t.domain) for w, ts in plain for t in ts)
    held = tool_data.build("heldout", 120, seed=2)[0]
    monkeypatch.setattr(tool_data, "NEAR_SHARE", 1.0)
    near = _no_fit_rows(tool_data.build("train", 300, seed=2)[0])
    assert len(near) > 50
    assert all(any(t.domain == w.domain for t in ts) for w, ts in near)
    assert tool_data.build("heldout", 120, seed=2)[0] == held  # the held-out rows, draw for draw
