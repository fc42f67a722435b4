"""Cross-check our BFCL checker (instructify/evals/bfcl.py) against BFCL's real one, output by output.
Writes bench/bfcl-crosscheck.json.

    python scripts/bfcl_crosscheck.py [--outputs FILE.jsonl] [--venv .venv-bfcl] [--out bench/bfcl-crosscheck.json]
    python scripts/bfcl_crosscheck.py --run runs/tools --out bench/bfcl-crosscheck-model.json   # a model's replies

FILE.jsonl: one model output a line, {"id", "category", "calls": [{"name", "arguments"}]} (tool names as the model
wrote them; an optional "variant" labels the line). Without --outputs, the script writes one from the gold answers
and systematic perturbations of them (passes and failures) on every item of the five categories.

BFCL's checker pins numpy==1.26.4 and imports every API client it supports, so it runs in its own venv (.venv-bfcl,
created on first use with `pip install bfcl-eval==2026.3.23 soundfile`: qwen-agent, which BFCL's model table
imports, needs soundfile without declaring it). There the per-entry runners of BFCL's eval_runner
(_evaluate_single_ast_entry / _evaluate_single_relevance_entry: format check, then ast_checker) judge each output,
as for an FC model with underscore_to_dot (BFCL's setting for OpenAI-style names, which is how our tools are named).
If the full install fails, the venv gets `--no-deps` only: ast_checker itself needs nothing outside the standard
library once its one import of the model table (for underscore_to_dot) is stubbed; the format checks are then
BFCL's rules restated in a few lines.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from instructify.evals import bfcl  # noqa: E402

MODEL = "gpt-5.2-2025-12-11-FC"  # an FC model in BFCL's table with underscore_to_dot=True
BFCL_CATEGORY = {"simple": "simple_python"}  # BFCL's file/category name where it differs from ours

# Runs in the BFCL venv: argv = mode ("full" or "minimal"), outputs file, model name; prints one verdict a line.
BFCL_PROGRAM = r"""
import importlib.resources, json, sys, types
mode, outputs, model = sys.argv[1:4]
if mode == "minimal":  # ast_checker reads only underscore_to_dot from the model table; the table imports every client
    stub = types.ModuleType("bfcl_eval.constants.model_config")
    stub.MODEL_CONFIG_MAPPING = {model.replace("_", "/"): types.SimpleNamespace(underscore_to_dot=True)}
    sys.modules["bfcl_eval.constants.model_config"] = stub
from bfcl_eval.constants.enums import Language, ReturnFormat
from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
NAMES = {"simple": "simple_python"}

def rows(name, answers=False):
    data = importlib.resources.files("bfcl_eval") / "data"
    path = (data / "possible_answer" if answers else data) / f"BFCL_v4_{name}.json"
    return {r["id"]: r for r in (json.loads(l) for l in path.read_text().splitlines() if l.strip())}

class Handler:  # decode_ast of BFCL's hermes-style FC handlers (QwenFCHandler) on calls already parsed
    def decode_ast(self, result, language=None, has_tool_call_tag=False):
        if type(result) != list or any(type(c) != dict for c in result):
            raise ValueError(f"Model did not return a list of function calls: {result}")
        return [{c["name"]: {k: v for k, v in c["arguments"].items()}} for c in result]

def minimal(entry_id, calls, prompt, answer, category):  # eval_runner's two per-entry rules, restated
    try:
        decoded = Handler().decode_ast(calls)
    except Exception as e:
        decoded = None
    shaped = type(decoded) == list and all(type(c) == dict and len(c) == 1 and type(list(c.values())[0]) == dict for c in decoded)
    if category == "irrelevance":
        empty = not shaped or len(decoded) == 0 or (len(decoded) == 1 and len(decoded[0]) == 0)
        return {"valid": empty, "error_type": None if empty else "irrelevance_error:decoder_success"}
    if decoded is None or not shaped:
        return {"valid": False, "error_type": "ast_decoder:decoder_failed"}
    return ast_checker(prompt["function"], decoded, answer["ground_truth"], Language.PYTHON, NAMES.get(category, category), model)

cache = {}
def data(category):
    if category not in cache:
        name = NAMES.get(category, category)
        if mode == "full":  # BFCL's own loaders, as evaluate_task calls them
            from bfcl_eval.utils import load_dataset_entry, load_ground_truth_entry
            prompts = {r["id"]: r for r in load_dataset_entry(name, include_prereq=False, include_language_specific_hint=False)}
            answers = {} if category == "irrelevance" else {r["id"]: r for r in load_ground_truth_entry(name)}
        else:
            prompts, answers = rows(name), ({} if category == "irrelevance" else rows(name, True))
        cache[category] = prompts, answers
    return cache[category]

if mode == "full":
    from bfcl_eval.eval_checker import eval_runner
for line in open(outputs):
    if not line.strip():
        continue
    out = json.loads(line)
    category, entry_id = out["category"], out["id"]
    prompts, answers = data(category)
    name = NAMES.get(category, category)
    try:
        if mode == "full" and category == "irrelevance":
            r = eval_runner._evaluate_single_relevance_entry(Handler(), entry_id, out["calls"], prompts[entry_id], model, name)
        elif mode == "full":
            r = eval_runner._evaluate_single_ast_entry(Handler(), entry_id, out["calls"], answers[entry_id]["ground_truth"],
                prompts[entry_id], model, name, language=Language.PYTHON, return_format=ReturnFormat.PYTHON)
        else:
            r = minimal(entry_id, out["calls"], prompts[entry_id], answers.get(entry_id), category)
    except Exception as e:  # BFCL's checker raising is a verdict too (its runner would stop there)
        r = {"valid": False, "error_type": "checker_exception", "error": [f"{type(e).__name__}: {e}"]}
    error = json.dumps(r.get("error", []), default=str)[:400]
    print(json.dumps({"valid": bool(r["valid"]), "error_type": r.get("error_type"), "error": error}), flush=True)
"""


# ---- the BFCL venv ----------------------------------------------------------------------------------------------


def _pip(venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args], text=True,
                          capture_output=True)  # fmt: skip


def ensure_venv(venv: Path) -> str:
    """The BFCL venv, made on first use; returns "full" (BFCL's whole package imports) or "minimal"."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(
            f"creating {venv} (bfcl-eval=={bfcl.BFCL_VERSION} with its pinned deps; a few minutes)",
            file=sys.stderr,
        )
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        full = _pip(venv, f"bfcl-eval=={bfcl.BFCL_VERSION}", "soundfile")
        if full.returncode != 0:
            print(f"full install failed, installing --no-deps:\n{full.stderr[-2000:]}", file=sys.stderr)
            _pip(venv, "--no-deps", f"bfcl-eval=={bfcl.BFCL_VERSION}").check_returncode()
    probe = subprocess.run([str(python), "-c", "import bfcl_eval.eval_checker.eval_runner"], capture_output=True,
                           text=True, env={**os.environ, "BFCL_PROJECT_ROOT": tempfile.gettempdir()})  # fmt: skip
    if probe.returncode != 0:
        print(
            f"BFCL's eval_runner does not import, using ast_checker alone:\n{probe.stderr[-800:]}",
            file=sys.stderr,
        )
    return "full" if probe.returncode == 0 else "minimal"


def bfcl_verdicts(venv: Path, mode: str, outputs: Path) -> list[dict]:
    with tempfile.TemporaryDirectory() as scratch:  # BFCL puts lock files and results under its project root
        env = {**os.environ, "BFCL_PROJECT_ROOT": scratch}
        run = subprocess.run([str(venv / "bin" / "python"), "-c", BFCL_PROGRAM, mode, str(outputs), MODEL], env=env,
                             capture_output=True, text=True)  # fmt: skip
    if run.returncode != 0:
        raise SystemExit(f"BFCL's checker failed:\n{run.stderr[-3000:]}")
    return [json.loads(line) for line in run.stdout.splitlines() if line.strip()]


# ---- generated outputs: the gold answer and systematic perturbations of it ----------------------------------------


def _wrong(value):
    """A value that no sensible allowed list holds alongside `value`."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1.5 if isinstance(value, float) else value + 1
    if isinstance(value, str):
        return value + " zzz"
    if isinstance(value, list):
        return value + (value[:1] or ["zzz"])
    if isinstance(value, dict):
        return {}
    return 0


def _map_values(calls: list[dict], fn) -> list[dict]:
    return [{"name": c["name"], "arguments": {p: fn(v) for p, v in c["arguments"].items()}} for c in calls]


def _last_allowed(item: bfcl.Item) -> list[dict]:
    """The gold answer with the last allowed value of each param instead of the first (the alternatives)."""
    flipped = copy.deepcopy(item)
    for answer in flipped.answers:
        for params in answer.values():
            for values in params.values():
                values.reverse()
                for v in values:
                    for d in v if isinstance(v, list) else [v]:
                        if isinstance(d, dict):
                            for vs in d.values():
                                vs.reverse()
    return bfcl.gold_calls(flipped)


def _with_optional(item: bfcl.Item) -> list[dict]:
    calls = bfcl.gold_calls(item)
    for call, answer in zip(calls, item.answers):
        for param, values in next(iter(answer.values())).items():
            if param not in call["arguments"] and any(v != "" for v in values):
                call["arguments"][param] = next(v for v in values if v != "")
    return calls


def _first_arg(calls: list[dict], pick, change) -> list[dict] | None:
    """`calls` with the first argument of the first call that `pick(param, value)` selects changed."""
    out = copy.deepcopy(calls)
    for call in out:
        for param, value in call["arguments"].items():
            if pick(param, value):
                change(call["arguments"], param, value)
                return out
    return None


def _int_float(value, to_int: bool):
    if to_int and type(value) is float and value.is_integer():
        return int(value)
    if not to_int and type(value) is int:
        return float(value)
    if isinstance(value, list):
        return [_int_float(v, to_int) for v in value]
    return value


def _shout(value):
    """Upper case with spaces as hyphens: the same answer after BFCL's standardisation."""
    return value.upper().replace(" ", "-") if isinstance(value, str) else value


def variants(item: bfcl.Item) -> dict[str, list[dict]]:
    """Named perturbations of the gold answer, each kept only where it changes something."""
    if item.category == "irrelevance":
        tool = item.tools[0]["function"]
        args = {p: "x" for p in tool["parameters"].get("required", [])}
        return {"no_call": [], "call_a_tool": [{"name": tool["name"], "arguments": args}]}
    gold = bfcl.gold_calls(item)
    first = gold[0]
    required = set(bfcl._doc(item, item.names[first["name"]])["parameters"].get("required", []))
    dotted = next(iter(item.answers[0]))
    out: dict[str, list[dict] | None] = {
        "gold": gold,
        "last_allowed": _last_allowed(item),
        "with_optional": _with_optional(item),
        "no_call": [],
        "wrong_name": [{**first, "name": first["name"] + "_v2"}] + gold[1:],
        "dotted_name": [{**first, "name": dotted}] + gold[1:] if "." in dotted else None,
        "drop_required": _first_arg(gold, lambda p, v: p in required, lambda a, p, v: a.pop(p)),
        "drop_needed_optional": _first_arg(gold, lambda p, v: p not in required, lambda a, p, v: a.pop(p)),
        "extra_param": [{**first, "arguments": {**first["arguments"], "extra_param": "x"}}] + gold[1:],
        "wrong_value": _first_arg(gold, lambda p, v: True, lambda a, p, v: a.__setitem__(p, _wrong(v))),
        "value_as_string": _first_arg(
            gold, lambda p, v: not isinstance(v, str), lambda a, p, v: a.__setitem__(p, str(v))
        ),
        "bool_for_int": _first_arg(
            gold, lambda p, v: type(v) is int, lambda a, p, v: a.__setitem__(p, bool(v))
        ),
        "int_for_float": _map_values(gold, lambda v: _int_float(v, to_int=True)),
        "float_for_int": _map_values(gold, lambda v: _int_float(v, to_int=False)),
        "strings_shouted": _map_values(
            gold, lambda v: [_shout(x) for x in v] if isinstance(v, list) else _shout(v)
        ),
        "two_calls" if len(gold) == 1 else "extra_call": gold + [gold[0]],
    }
    if len(gold) > 1:
        out["reversed"] = gold[::-1]
        out["dropped_last"] = gold[:-1]
        out["first_repeated"] = gold[:-1] + [gold[0]]
        out["swapped_arguments"] = [{**gold[0], "arguments": gold[1]["arguments"]},
                                    {**gold[1], "arguments": gold[0]["arguments"]}] + gold[2:]  # fmt: skip
    same = json.dumps(gold)  # by text: 1 == 1.0 == True in Python, but those are the perturbations here
    return {k: v for k, v in out.items() if v is not None and (k == "gold" or json.dumps(v) != same)}


def generate(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for category in bfcl.CATEGORIES:
            for item in bfcl.load(category):
                for name, calls in variants(item).items():
                    line = {"id": item.id, "category": category, "variant": name, "calls": calls}
                    f.write(json.dumps(line) + "\n")


# ---- compare ------------------------------------------------------------------------------------------------------


def _tally(groups: dict[str, Counter], ids: dict[str, set] | None = None) -> dict:
    return {
        name: {**({"items": len(ids[name])} if ids else {}), "outputs": c["outputs"], "agree": c["agree"],
               "agreement": c["agree"] / c["outputs"], "ours_passed": c["ours"], "bfcl_passed": c["bfcl"]}
        for name, c in groups.items()
    }  # fmt: skip


def compare(outputs: Path, verdicts: list[dict]) -> dict:
    """Our verdict against BFCL's, line by line, counted per category and per variant."""
    items = {c: {i.id: i for i in bfcl.load(c)} for c in bfcl.CATEGORIES}
    lines = [json.loads(line) for line in outputs.read_text().splitlines() if line.strip()]
    if len(lines) != len(verdicts):
        raise SystemExit(f"{len(lines)} outputs but {len(verdicts)} BFCL verdicts")
    per = {c: Counter() for c in bfcl.CATEGORIES}
    ids: dict[str, set] = {c: set() for c in bfcl.CATEGORIES}
    by_variant: dict[str, Counter] = {}
    disagreements = []
    for n, (out, theirs) in enumerate(zip(lines, verdicts)):
        ok, reason = bfcl.check(items[out["category"]][out["id"]], out["calls"])
        ids[out["category"]].add(out["id"])
        for c in (per[out["category"]], by_variant.setdefault(str(out.get("variant")), Counter())):
            c.update(outputs=1, agree=ok == theirs["valid"], ours=ok, bfcl=theirs["valid"])
        if ok != theirs["valid"]:
            disagreements.append({"line": n + 1, "id": out["id"], "variant": out.get("variant"),
                                  "ours": {"passed": ok, "reason": reason}, "bfcl": theirs})  # fmt: skip
    agree = sum(c["agree"] for c in per.values())
    return {
        "outputs": len(lines),
        "agree": agree,
        "agreement": agree / len(lines) if lines else 0.0,
        "categories": _tally({c: n for c, n in per.items() if n["outputs"]}, ids),
        "variants": _tally(by_variant),
        "disagreements": disagreements,
    }


def run_outputs(run: Path, name: str, out: Path) -> Path:
    """A run's own BFCL replies (tools.json, entry `name`) as outputs: the calls our parser reads from each."""
    import re

    from instructify.chat import tools

    ours = {v: k for k, v in BFCL_CATEGORY.items()}
    replies = json.loads((run / "tools.json").read_text())[name]["bfcl"]["replies"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for r in replies:
            bfcl_category = re.sub(r"_\d+$", "", r["id"])  # BFCL ids are <category>_<n>
            category = ours.get(bfcl_category, bfcl_category)
            calls = tools.parse_reply(r["reply"]).calls
            f.write(
                json.dumps({"id": r["id"], "category": category, "calls": calls, "variant": f"{run}:{name}"})
                + "\n"
            )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--outputs", type=Path, help="JSONL of model outputs (default: generated gold + perturbations)"
    )
    p.add_argument(
        "--run", type=Path, help="instead of --outputs: a run folder whose tools.json holds BFCL replies"
    )
    p.add_argument("--name", default="trained", help="with --run: the model entry (default: %(default)s)")
    p.add_argument("--venv", type=Path, default=ROOT / ".venv-bfcl")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "bfcl-crosscheck.json")
    args = p.parse_args()

    outputs = args.outputs
    if args.run:
        outputs = run_outputs(
            args.run, args.name, ROOT / "runs" / "bfcl-crosscheck" / f"{args.name}-outputs.jsonl"
        )
    elif outputs is None:
        outputs = ROOT / "runs" / "bfcl-crosscheck" / "generated-outputs.jsonl"
        generate(outputs)
    mode = ensure_venv(args.venv)
    result = compare(outputs, bfcl_verdicts(args.venv, mode, outputs))
    report = {
        "outputs_file": str(outputs.relative_to(ROOT) if outputs.is_relative_to(ROOT) else outputs),
        "generated": args.outputs is None and args.run is None,
        "bfcl_eval": bfcl.BFCL_VERSION,
        "bfcl_mode": mode,
        "bfcl_model_name": MODEL,
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for cat, c in report["categories"].items():
        print(f"{cat:18} items {c['items']:4}  outputs {c['outputs']:5}  agreement {c['agree']}/{c['outputs']}"
              f" = {c['agreement']:.4f}  (passed: ours {c['ours_passed']}, BFCL {c['bfcl_passed']})")  # fmt: skip
    print(
        f"{'all':18} agreement {report['agree']}/{report['outputs']} = {report['agreement']:.4f} -> {args.out}"
    )
    return 0 if not report["disagreements"] else 1


if __name__ == "__main__":
    sys.exit(main())
