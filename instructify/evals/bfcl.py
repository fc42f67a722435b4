"""BFCL (Berkeley Function Calling Leaderboard) v4, the single-turn AST categories: data, tools, checker, score.

Our own checker, written to the rules of BFCL's AST checker (`bfcl_eval/eval_checker/ast_eval/ast_checker.py` in
bfcl-eval 2026.3.23), because that package pins numpy==1.26.4 and a long list of API clients, so it cannot live in
our venv. We only read its data files: `make setup` installs it with `pip install --no-deps bfcl-eval==2026.3.23`.
`scripts/bfcl_crosscheck.py` runs BFCL's real checker (in its own venv) on the same outputs and compares verdicts.

Categories: simple (BFCL's simple_python), multiple, parallel, parallel_multiple, irrelevance. Never any `live_*`
file: every path goes through `_data_file`, which only knows these five.

Tools are shown to the model the way BFCL compiles them for an OpenAI-style FC model (`convert_to_tool` with
`GORILLA_TO_OPENAPI`): the Python-3 note appended to each description, BFCL types mapped to JSON schema (dict ->
object, float -> number with format float, tuple -> array, any -> string ...), and "." in names replaced by "_"
(OpenAI names must match ^[a-zA-Z0-9_-]{1,64}$). The checker then compares in that naming, as BFCL does for a model
with `underscore_to_dot`: a call is mapped back through `Item.names`, and a name that is not a tool name (e.g. the
original dotted one) is a wrong function name.

BFCL's rules, as its checker applies them (including the quirks, so our numbers are BFCL's numbers):
- simple/multiple: exactly one call; parallel/parallel_multiple: as many calls as ground truth, matched without
  regard to order, greedily (each ground-truth call, in order, takes the first still-unmatched call that passes);
  irrelevance: passes iff there is no call.
- a call: the name; every `required` param present; no param outside the doc or the ground truth; each value of
  the doc's type (Python rules: bool is not int, an int is promoted for a top-level float, a tuple is a list;
  array/tuple items checked one level deep); each value in the allowed list (strings after `standardize`, dict
  values key by key, lists element-wise); a ground-truth param omitted only where "" is allowed.
- a "variable": where the ground truth's values are of another type than the doc's (e.g. "data['sales']" for an
  array), a value of the ground truth's type is accepted if it equals an allowed value exactly.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.resources
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

BFCL_VERSION = "2026.3.23"
CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")
_FILES = {"simple": "simple_python", "multiple": "multiple", "parallel": "parallel",
          "parallel_multiple": "parallel_multiple", "irrelevance": "irrelevance"}  # fmt: skip
PYTHON_HINT = " Note that the provided function is in Python 3 syntax."  # BFCL's _get_language_specific_hint

# BFCL's doc types as Python types (ast_checker.PYTHON_TYPE_MAPPING): the checker reads the BFCL doc, not the schema.
PYTHON_TYPES: dict[str, type] = {"string": str, "integer": int, "float": float, "boolean": bool, "array": list,
                                 "tuple": list, "dict": dict, "any": str}  # fmt: skip
# BFCL's doc types as JSON schema types (constants/type_mappings.GORILLA_TO_OPENAPI).
OPENAPI_TYPES = {
    "integer": "integer", "number": "number", "float": "number", "string": "string", "boolean": "boolean",
    "bool": "boolean", "array": "array", "list": "array", "dict": "object", "object": "object", "tuple": "array",
    "any": "string", "byte": "integer", "short": "integer", "long": "integer", "double": "number", "char": "string",
    "ArrayList": "array", "Array": "array", "HashMap": "object", "Hashtable": "object", "Queue": "array",
    "Stack": "array", "Any": "string", "String": "string", "Bigint": "integer",
}  # fmt: skip
_NESTED = ("array", "tuple")  # BFCL type-checks the items of these (one level)
_PUNCTUATION = re.compile(r"[ ,./\-_*^]")  # what BFCL's standardize_string removes


@dataclass(frozen=True)
class Item:
    id: str
    category: str
    messages: list[dict]  # the single turn, OpenAI shape {"role", "content"}
    tools: list[dict]  # OpenAI tool schemas, as BFCL compiles them for FC models
    answers: list[dict]  # BFCL ground truth [{bfcl_name: {param: [allowed values]}}]; [] for irrelevance
    functions: list[dict]  # BFCL's own docs (the checker reads types and `required` from these, as BFCL does)
    names: dict[str, str]  # tool name -> BFCL name (the two differ where BFCL's name has a ".")


# ---- data -------------------------------------------------------------------------------------------------------


def _data_file(category: str, answers: bool = False):
    """The one place a data path is made, so nothing outside CATEGORIES (no live_* file) can be read."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown BFCL category {category!r}; one of {', '.join(CATEGORIES)}")
    try:
        root = importlib.resources.files("bfcl_eval") / "data"
    except ModuleNotFoundError as e:
        raise RuntimeError(
            "the BFCL data comes from the bfcl-eval package, which is not installed: `make setup` installs it "
            f"with `pip install --no-deps bfcl-eval=={BFCL_VERSION}` (--no-deps: its own deps pin an old numpy)"
        ) from e
    name = f"BFCL_v4_{_FILES[category]}.json"
    return root / "possible_answer" / name if answers else root / name


@cache
def _rows(category: str, answers: bool = False) -> tuple[dict, ...]:
    text = _data_file(category, answers).read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def tool_name(name: str) -> str:
    """BFCL's name for FC models with OpenAI-style names: "." is not allowed there, so it becomes "_"."""
    return name.replace(".", "_")


def _openapi_properties(properties: dict) -> dict:
    """BFCL's _cast_to_openai_type (model_handler/utils.py) with GORILLA_TO_OPENAPI, same depth, in place."""
    for spec in properties.values():
        bfcl_type = spec.get("type")
        if bfcl_type == "float":  # BFCL tells FC models which numbers are floats
            spec["format"] = "float"
            spec["description"] = spec.get("description", "") + " This is a float type value."
        spec["type"] = OPENAPI_TYPES.get(bfcl_type, "string")  # no type, or an unknown one: string, as BFCL
        if spec["type"] not in ("array", "object"):
            continue
        if "properties" in spec:
            spec["properties"] = _openapi_properties(spec["properties"])
        elif "items" in spec:
            items = spec["items"]
            items["type"] = OPENAPI_TYPES[items["type"]]
            if items["type"] == "array" and "items" in items:
                items["items"]["type"] = OPENAPI_TYPES[items["items"]["type"]]
            elif items["type"] == "object" and "properties" in items:
                items["properties"] = _openapi_properties(items["properties"])
    return properties


def to_tool(function: dict) -> dict:
    """A BFCL function doc as the OpenAI tool schema BFCL gives an FC model (hint added, then convert_to_tool)."""
    fn = copy.deepcopy(function)
    fn["description"] = fn.get("description", "") + PYTHON_HINT
    fn["name"] = tool_name(fn["name"])
    fn["parameters"]["type"] = "object"
    fn["parameters"]["properties"] = _openapi_properties(fn["parameters"]["properties"])
    return {"type": "function", "function": fn}


def _item(category: str, row: dict, answer: dict | None) -> Item:
    if len(row["question"]) != 1:  # these categories are single-turn; anything else is not ours to score
        raise ValueError(f"{row['id']}: {len(row['question'])} turns, expected 1")
    names = {tool_name(fn["name"]): fn["name"] for fn in row["function"]}
    if len(names) != len(row["function"]):  # "a.b" and "a_b" in one item could not be told apart
        raise ValueError(f"{row['id']}: two functions share the tool name of {sorted(names)}")
    return Item(
        id=row["id"],
        category=category,
        messages=[{"role": m["role"], "content": m["content"]} for m in row["question"][0]],
        tools=[to_tool(fn) for fn in row["function"]],
        answers=copy.deepcopy(answer["ground_truth"]) if answer else [],
        functions=copy.deepcopy(row["function"]),
        names=names,
    )


def sample_ids(ids: Sequence[str], limit: int | None, seed: int = 0) -> list[str]:
    """`limit` of `ids` (all when None), chosen by a hash of seed and id: the same on every run and Python, and a
    smaller budget's subset lies inside a larger one's. Returned in the order given."""
    if limit is None or limit >= len(ids):
        return list(ids)
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    keep = set(ranked[: max(limit, 0)])
    return [i for i in ids if i in keep]


def load(category: str, limit: int | None = None, seed: int = 0) -> list[Item]:
    """The items of one category, or a seeded sample of `limit` of them (stable: same seed, same ids)."""
    rows = _rows(category)
    answers = {} if category == "irrelevance" else {a["id"]: a for a in _rows(category, answers=True)}
    if category != "irrelevance" and set(answers) != {r["id"] for r in rows}:
        raise ValueError(f"BFCL {category}: questions and possible answers name different ids")
    keep = set(sample_ids([r["id"] for r in rows], limit, seed))
    return [_item(category, r, answers.get(r["id"])) for r in rows if r["id"] in keep]


def _first(allowed: list) -> Any:
    return next(v for v in allowed if v != "")


def _gold_value(spec: dict, allowed: list) -> Any:
    """The first allowed value; dict answers hold allowed lists per key, so those are resolved the same way."""
    value = _first(allowed)
    if spec.get("type") == "dict" and isinstance(value, dict):
        return {k: _first(vs) for k, vs in value.items() if "" not in vs}
    if spec.get("type") == "array" and isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return [{k: _first(vs) for k, vs in d.items() if "" not in vs} for d in value]
    return value


def gold_calls(item: Item) -> list[dict]:
    """The ground truth as model calls (tool names): first allowed value of each param; a param is left out where
    "" allows it and the doc does not require it."""
    calls = []
    for answer in item.answers:
        ((name, params),) = answer.items()
        doc = _doc(item, name)
        props, required = doc["parameters"]["properties"], doc["parameters"].get("required", [])
        args = {
            p: _gold_value(props.get(p, {}), vs) for p, vs in params.items() if "" not in vs or p in required
        }
        calls.append({"name": tool_name(name), "arguments": args})
    return calls


# ---- checker ----------------------------------------------------------------------------------------------------


def standardize(text: str) -> str:
    """BFCL's standardize_string: "April 1, 2024" and "april 1 2024" are the same answer."""
    return _PUNCTUATION.sub("", text).lower().replace("'", '"')


def _doc(item: Item, bfcl_name: str) -> dict:
    return next(fn for fn in item.functions if fn["name"] == bfcl_name)


def _answer_type(allowed: list) -> type | None:
    """The type of the first allowed value that is not the "may be omitted" marker (BFCL's possible answer type)."""
    return next((type(v) for v in allowed if v != ""), None)


def _type_ok(value: Any, allowed: list, expected: type, inner: type | None) -> tuple[bool, bool]:
    """(type right, value is a "variable"), BFCL's type_checker. A variable: the ground truth holds another type
    than the doc says (e.g. a string naming a variable), so the value is then compared exactly."""
    answer_type = _answer_type(allowed)
    variable = answer_type is not None and answer_type is not expected
    if type(value) is expected:  # exact: bool is not int
        if inner is None:
            return True, variable
        # Items must fit some allowed list; a non-list allowed value ("" or a variable) lets any items through.
        if any(type(a) is not list or all(_type_ok(v, a, inner, None)[0] for v in value) for a in allowed):
            return True, variable
        return False, False
    if answer_type is not None and type(value) is answer_type:
        return True, True
    return False, False


def _std(value: Any) -> Any:
    return standardize(value) if type(value) is str else value


def _dict_reason(param: str, value: dict, allowed: list) -> str | None:
    """BFCL's dict_checker: keys within one allowed dict, each value allowed (strings standardized, one level)."""
    reason = f"value of {param} not allowed"
    for answer in allowed:
        if answer == "" or not isinstance(answer, dict):
            continue
        reason = None
        for key, v in value.items():
            if key not in answer:
                reason = f"unexpected key in {param}: {key}"
            elif _std(v) not in [_std(a) for a in answer[key]]:
                reason = f"value of {param}[{key!r}] not allowed"
            if reason:
                break
        if reason is None:
            missing = [k for k, vs in answer.items() if k not in value and "" not in vs]
            reason = f"missing key in {param}: {missing[0]}" if missing else None
        if reason is None:
            return None
    return reason


def _list_of_dicts_reason(param: str, value: list, allowed: list) -> str | None:
    """BFCL's list_dict_checker: same length as an allowed list, dict by dict in order ("" allows [])."""
    reason = f"value of {param} not allowed"
    for answer in allowed:
        if not isinstance(answer, (list, str)) or len(value) != len(answer):
            reason = f"wrong number of dicts in {param}"
            continue
        reason = None
        for v, a in zip(value, answer):
            reason = _dict_reason(param, v, [a]) if isinstance(v, dict) else f"value of {param} not allowed"
            if reason:
                break
        if reason is None:
            return None
    return reason


def _value_reason(param: str, value: Any, spec: dict, allowed: list) -> str | None:
    """Why `value` is not right for `param` (None: it is), BFCL's per-parameter rules in BFCL's order."""
    doc_type = spec.get("type")
    if doc_type not in PYTHON_TYPES:
        raise ValueError(f"BFCL type {doc_type!r} of {param} is not a Python-category type")
    expected = PYTHON_TYPES[doc_type]
    inner = PYTHON_TYPES[spec["items"]["type"]] if doc_type in _NESTED else None
    # Python promotes int to float; BFCL allows it (for a top-level float only, not for array items)
    if doc_type == "float" and type(value) is int:
        value = float(value)
    type_ok, variable = _type_ok(value, allowed, expected, inner)
    if not type_ok and type(value) is expected:
        return f"wrong type for {param}: items are not all {spec['items']['type']}"
    if not type_ok:
        return f"wrong type for {param}: expected {doc_type}, got {type(value).__name__}"
    if variable:
        pass  # exact comparison below
    elif expected is dict:
        return _dict_reason(param, value, allowed)
    elif expected is list and inner is dict:
        return _list_of_dicts_reason(param, value, allowed)
    elif expected is str:
        ok = standardize(value) in [standardize(a) for a in allowed if type(a) is str]
        return None if ok else f"value of {param} not allowed"
    elif expected is list:
        # Top-level strings standardized on both sides; "" (omittable) stands for [] here, as in BFCL.
        candidates = [[_std(x) for x in a] for a in allowed if isinstance(a, (list, str))]
        return None if [_std(x) for x in value] in candidates else f"value of {param} not allowed"
    return None if value in allowed else f"value of {param} not allowed"


def _call_reason(item: Item, call: dict, answer: dict) -> str | None:
    """Why one model call does not match one ground-truth call (None: it matches), BFCL's simple_function_checker."""
    ((bfcl_name, allowed),) = answer.items()
    if item.names.get(call["name"]) != bfcl_name:
        return f"wrong function name: {call['name']} (expected {tool_name(bfcl_name)})"
    doc = _doc(item, bfcl_name)
    props, args = doc["parameters"]["properties"], call["arguments"]
    for param in doc["parameters"].get("required", []):
        if param not in args:
            return f"missing required parameter: {param}"
    for param, value in args.items():
        if param not in props or param not in allowed:
            return f"unexpected parameter: {param}"
        reason = _value_reason(param, value, props[param], allowed[param])
        if reason:
            return reason
    for param, values in allowed.items():
        if param not in args and "" not in values:  # optional in the doc, but the ground truth wants it
            return f"missing optional parameter: {param} (the ground truth needs it)"
    return None


def _malformed(calls: Any) -> str | None:
    if not isinstance(calls, list):
        return "calls is not a list"
    for call in calls:
        shaped = isinstance(call, dict) and isinstance(call.get("name"), str)
        if not (shaped and isinstance(call.get("arguments"), dict)):
            return f"not a {{'name': str, 'arguments': dict}} call: {call!r}"
    return None


def _unordered_reason(item: Item, calls: list[dict]) -> str | None:
    """BFCL's parallel_function_checker_no_order: each ground-truth call, in order, takes the first unmatched call
    that passes (greedy, as BFCL; not a maximum matching)."""
    used: set[int] = set()
    for index, answer in enumerate(item.answers):
        reasons = []
        for j, call in enumerate(calls):
            if j in used:
                continue
            reason = _call_reason(item, call, answer)
            if reason is None:
                used.add(j)
                break
            reasons.append(reason)
        else:
            named = [r for r in reasons if not r.startswith("wrong function name")]  # the closest miss
            why = (named or reasons or ["nothing left"])[0]
            return f"no matching call: ground truth #{index} {tool_name(next(iter(answer)))}, closest: {why}"
    return None


def check(item: Item, calls: list[dict]) -> tuple[bool, str]:
    """(passed, reason) for the model's parsed calls [{"name": tool name as written, "arguments": dict}]."""
    if item.category == "irrelevance":  # any call at all is wrong here, well-formed or not
        return (True, "ok") if not calls else (False, "function called: none of the tools fits the question")
    malformed = _malformed(calls)
    if malformed:
        return False, f"malformed call: {malformed}"
    if len(calls) != len(item.answers):
        return False, f"wrong number of calls: {len(calls)}, expected {len(item.answers)}"
    if item.category in ("simple", "multiple"):
        reason = _call_reason(item, calls[0], item.answers[0])
    else:
        reason = _unordered_reason(item, calls)
    return (True, "ok") if reason is None else (False, reason)


# ---- score ------------------------------------------------------------------------------------------------------


def reason_kind(reason: str) -> str:
    """The reason without its particulars ("missing required parameter: x" -> "missing required parameter")."""
    return reason.split(":", 1)[0]


def score(items: Sequence[Item], calls_per_item: Sequence[list[dict]] | Mapping[str, list[dict]]) -> dict:
    """Accuracy per category (and over all items, and BFCL-style as the unweighted mean of the categories), with
    the failure reasons counted by kind. `calls_per_item`: aligned with `items`, or a mapping by item id."""
    if isinstance(calls_per_item, Mapping):
        calls_list = [calls_per_item.get(item.id, []) for item in items]
    else:
        if len(calls_per_item) != len(items):
            raise ValueError(f"{len(calls_per_item)} call lists for {len(items)} items")
        calls_list = list(calls_per_item)
    per: dict[str, dict] = {}
    failures: Counter[str] = Counter()
    for item, calls in zip(items, calls_list):
        ok, reason = check(item, calls)
        cat = per.setdefault(item.category, {"items": 0, "passed": 0, "failures": Counter()})
        cat["items"] += 1
        cat["passed"] += ok
        if not ok:
            cat["failures"][reason_kind(reason)] += 1
            failures[reason_kind(reason)] += 1
    categories = {
        name: {"items": c["items"], "passed": c["passed"], "accuracy": c["passed"] / c["items"],
               "failures": dict(c["failures"].most_common())}
        for name, c in sorted(per.items(), key=lambda kv: CATEGORIES.index(kv[0]))
    }  # fmt: skip
    total, passed = len(items), sum(c["passed"] for c in categories.values())
    accuracies = [c["accuracy"] for c in categories.values()]
    return {
        "items": total,
        "passed": passed,
        "accuracy": passed / total if total else 0.0,
        "mean_accuracy": sum(accuracies) / len(accuracies) if accuracies else 0.0,
        "categories": categories,
        "failures": dict(failures.most_common()),
    }
