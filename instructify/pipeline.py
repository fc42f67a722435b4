"""The stages of a run, top to bottom: what `instructify train|sft|eval` does.

train: claim the run folder, set up (model + ChatML + data), record run.json, evaluate the base, fine-tune,
export, evaluate the exported folder and the reference, the instruction check, the report. Under a launcher every
rank trains; only rank 0 checks the folder, records, evaluates and exports.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from instructify import config as config_lib
from instructify import runs
from instructify.data import records
from instructify.evals import conformance, instructions, stored, tool_calls
from instructify.ship import export
from instructify.training import distributed, sft
from instructify.training.model import load, pick_dtype, resolve

log = logging.getLogger("instructify")


def train(
    cfg: config_lib.Config,
    evaluate_after: bool = True,
    eval_prompts: list[dict] | None = None,
    fit: Callable[[config_lib.Config, sft.Setup], Path] | None = None,
) -> None:
    """Every stage; `evaluate_after=False` is `sft`: stops once the adapter is written. `eval_prompts`: held-out
    prompts to use instead of the data's own (an improve round is measured on its SFT run's). `fit` writes the
    adapter in place of `sft.train` (an improve round's preference training)."""
    out = Path(cfg.output_dir)
    world = distributed.start()  # one job over every rank, or an error before anything is written
    processes = distributed.processes(world)
    from accelerate import PartialState

    state = PartialState()
    main = state.is_main_process
    if main:
        log.info("distributed: %s", distributed.describe(world))
        runs.claim(out, cfg.overwrite, cfg.training.resume)
    with state.main_process_first():  # rank 0 converts the model and fills the data cache first
        setup = sft.setup(cfg)
    if eval_prompts is not None:
        setup.data = dataclasses.replace(setup.data, eval_prompts=eval_prompts)
    if main:
        record_run(cfg, setup, processes)
        if evaluate_after and not (cfg.training.resume != "no" and "base" in conformance.read_report(out)):
            (out / "report.json").unlink(missing_ok=True)
            shown = base_shown(cfg, setup.tokenizer)
            prompts = setup.data.eval_prompts
            run_eval(cfg, setup.model, setup.tokenizer, prompts, "base", cfg.model.name, shown)
            check_instructions(cfg, "base", setup.model, setup.tokenizer, cfg.model.name, shown=shown)
            check_tools(cfg, "base", setup.model, setup.tokenizer, cfg.model.name, shown)
    (fit or sft.train)(cfg, setup)
    if not evaluate_after or not main:
        return
    export.export(cfg)
    evaluate_folder(cfg, out / "model", "trained", None)


def record_run(cfg: config_lib.Config, setup: sft.Setup, processes: list[dict]) -> None:
    """run.json (what ran, on what data), the resolved config and the held-out prompts, in the run folder."""
    out = Path(cfg.output_dir)
    for line in setup.data.report["lines"]:
        log.info("data: %s", line)
    record = runs.record(cfg, setup.data.fingerprint, processes)
    if cfg.training.resume != "no" and (out / "run.json").is_file():
        for warning in runs.check_resume(json.loads((out / "run.json").read_text()), record):
            log.warning("%s", warning)
    runs.write_json(out / "run.json", record)
    config_lib.save(cfg, out / "config.yaml")
    (out / "eval_prompts.json").write_text(json.dumps(setup.data.eval_prompts))


def evaluate_folder(cfg: config_lib.Config, folder: Path, name: str, reference: str | None) -> None:
    """Conformance of a model folder on the run's held-out prompts, the reference beside it, the instruction
    check, and the report."""
    out = Path(cfg.output_dir)
    prompts_file = out / "eval_prompts.json"
    if not prompts_file.is_file():
        raise records.DataError(f"{prompts_file}: missing; run `make train` first to fix the held-out split")
    prompts = json.loads(prompts_file.read_text())
    model, tokenizer = load(cfg.model, path=str(folder))
    run_eval(cfg, model, tokenizer, prompts, name, str(folder))
    check_instructions(cfg, name, model, tokenizer, str(folder))
    check_tools(cfg, name, model, tokenizer, str(folder))
    if cfg.eval.tools_grammar:
        check_tools(cfg, f"{name} (schema-held)", model, tokenizer, str(folder), constrained=True)
    del model
    run_reference(cfg, prompts, reference)
    check_base_incontext(cfg)
    print_report(out, cfg.eval.show_samples)


def eval_settings(cfg: config_lib.Config, prompts: list[dict]) -> dict:
    """What makes two evaluations comparable: a stored entry with the same settings need not be run again."""
    e = cfg.eval
    return {
        "prompts": [p["id"] for p in prompts[: e.num_conversations]],
        **{
            k: getattr(e, k)
            for k in ("max_new_tokens", "do_sample", "temperature", "top_p", "teacher_forced")
        },
    }


def sampling_of(e: config_lib.EvalConfig) -> dict | None:
    """Generation arguments for eval.do_sample (None: greedy)."""
    return {"do_sample": True, "temperature": e.temperature, "top_p": e.top_p} if e.do_sample else None


def base_shown(cfg: config_lib.Config, tokenizer) -> dict:
    """What the base is shown besides the prompts, for a stored result's key: its ChatML template and the
    settings that made its new rows."""
    return {"template": stored.fingerprint(tokenizer.chat_template), "model": model_shown(cfg),
            "chat": dataclasses.asdict(cfg.template)}  # fmt: skip


def model_shown(cfg: config_lib.Config) -> dict:
    """The model settings of a stored result's key, less `dtype`: the key holds the dtype it resolved to, so
    `auto` that chose float32 reuses what `float32` measured."""
    return {k: v for k, v in dataclasses.asdict(cfg.model).items() if k != "dtype"}


def _store_key(cfg: config_lib.Config, file: str, name: str, source: str, settings: dict, shown: dict | None):
    """The key of a model's stored result, or None: no store, a trained model (`shown` None), an unpinned source."""
    if not cfg.eval.stored or shown is None:
        return None
    version = stored.source_version(source, cfg.model.revision if source == cfg.model.name else None)
    if version is None:
        return None
    return stored.key(file, name, source, version, str(pick_dtype(cfg.model.dtype)), settings, shown)


def _reused(cfg: config_lib.Config, k: dict | None, put: Callable[[dict, list | None], object]) -> bool:
    """Put a stored result into the run folder (with where it was measured); False when there is none."""
    found = stored.load(cfg.eval.stored, k) if k else None
    if found is None:
        return False
    p = found["provenance"]
    where = {"path": str(stored.path_of(Path(cfg.eval.stored), k)), **p}
    put({**found["entry"], "stored": where}, found.get("samples"))
    log.info("%s: %s result reused from %s (measured %s on %s, commit %s; eval.stored='' measures it again)",
             k["name"], k["file"], where["path"], p["measured"], p["machine"], p["git_commit"])  # fmt: skip
    return True


def run_eval(
    cfg: config_lib.Config,
    model,
    tokenizer,
    prompts: list[dict],
    name: str,
    source: str,
    shown: dict | None = None,
) -> Path:
    """Conformance of one model into report.json; `shown` (an untrained model): reused from eval.stored, or
    measured and stored."""
    from transformers import set_seed

    out = Path(cfg.output_dir)
    k = _store_key(cfg, "report", name, source, eval_settings(cfg, prompts), shown)
    if _reused(cfg, k, lambda entry, samples: conformance.put_report(out, name, entry, samples or [])):
        return out / "report.json"
    e = cfg.eval
    n = min(e.num_conversations, len(prompts))
    sampling = sampling_of(e)
    set_seed(cfg.training.seed)
    t0 = time.time()
    metrics, replies = conformance.evaluate(
        model, tokenizer, prompts[:n], e.max_new_tokens, e.batch_size, e.teacher_forced, sampling
    )
    metrics["seconds"] = round(time.time() - t0, 1)
    metrics["machine"] = {"cpu": runs.cpu(), "dtype": str(model.dtype).removeprefix("torch.")}
    metrics.update(model_path=source, settings=eval_settings(cfg, prompts))
    log.info(
        "%s: stop_rate %.1f%%, clean_stop_rate %.1f%% on %d prompts (%.0f s)",
        name,
        100 * metrics["stop_rate"],
        100 * metrics["clean_stop_rate"],
        n,
        metrics["seconds"],
    )
    path = conformance.write_report(out, name, metrics, replies, prompts[:n])
    if k:
        stored.save(
            cfg.eval.stored, k, conformance.read_report(out)[name], conformance.read_samples(out, name)
        )
    return path


def run_reference(cfg: config_lib.Config, prompts: list[dict], explicit: str | None) -> None:
    """Evaluate the reference model, unless report.json already holds it with the same settings."""
    source = explicit or cfg.eval.reference
    if not source:
        return
    stored = conformance.read_report(Path(cfg.output_dir)).get("reference", {})
    # an explicit --reference is evaluated again; the configured one only when its stored entry is stale
    evaluated = (
        not explicit
        and stored.get("model_path") == source
        and stored.get("settings") == eval_settings(cfg, prompts)
    )
    checked = not cfg.eval.instructions or (not explicit and _stored_check(cfg, "reference", source))
    tooled = not _tools_on(cfg) or (not explicit and _stored_tools(cfg, "reference", source))
    if evaluated and checked and tooled:
        log.info("reference: %s already evaluated with these settings (report.json)", source)
        return
    shown = {} if not explicit else None  # its own template, pinned by its version
    out = Path(cfg.output_dir)
    # stored results first: the reference is loaded only for what is left to measure
    if not evaluated:
        k = _store_key(cfg, "report", "reference", source, eval_settings(cfg, prompts), shown)
        evaluated = _reused(
            cfg, k, lambda entry, samples: conformance.put_report(out, "reference", entry, samples or [])
        )
    if not checked:
        k = _store_key(cfg, "instructions", "reference", source, _check_settings(cfg), shown)
        checked = _reused(cfg, k, lambda entry, _: instructions.write(out, "reference", entry))
    if not tooled:
        k = _store_key(cfg, "tools", "reference", source, _tools_settings(cfg), shown)
        tooled = _reused(cfg, k, lambda entry, _: tool_calls.write(out, "reference", entry))
    if evaluated and checked and tooled:
        return
    model, tokenizer = load(cfg.model, path=resolve(source))
    if not evaluated:
        run_eval(cfg, model, tokenizer, prompts, "reference", source, shown)
    if not checked:
        check_instructions(cfg, "reference", model, tokenizer, source, shown=shown)
    if not tooled:
        check_tools(cfg, "reference", model, tokenizer, source, shown)


def _check_settings(cfg: config_lib.Config) -> dict:
    e = cfg.eval
    settings = {"per_kind": e.instructions, "max_new_tokens": e.instructions_max_new_tokens}
    return settings | ({"sampling": sampling_of(e)} if e.do_sample else {})  # greedy entries stay as stored


def _stored_check(cfg: config_lib.Config, name: str, source: str) -> bool:
    stored = instructions.read(Path(cfg.output_dir)).get(name, {})
    return stored.get("model_path") == source and stored.get("settings") == _check_settings(cfg)


def check_instructions(
    cfg: config_lib.Config,
    name: str,
    model,
    tokenizer,
    source: str,
    preamble: str | None = None,
    shown: dict | None = None,
) -> None:
    """The instruction check (instructify/evals/instructions.py) of one model, into <output_dir>/instructions.json;
    `shown` (an untrained model): reused from eval.stored, or measured and stored."""
    from transformers import set_seed

    e = cfg.eval
    if not e.instructions:
        return
    out = Path(cfg.output_dir)
    k = _store_key(cfg, "instructions", name, source, _check_settings(cfg), shown)
    if _reused(cfg, k, lambda entry, _: instructions.write(out, name, entry)):
        return
    set_seed(cfg.training.seed)
    checks = instructions.items(per_kind=e.instructions)
    result = _answered(cfg, model, tokenizer, source, checks, preamble)
    instructions.write(out, name, result)
    if k:
        stored.save(e.stored, k, result)
    log.info("%s: instruction check %.1f%% of %d correct (%.0f s)", name, 100 * result["score"], len(checks),
             result["seconds"])  # fmt: skip
    if e.second_set:
        check_second_set(cfg, name, model, tokenizer, source, preamble)


def _answered(
    cfg: config_lib.Config, model, tokenizer, source: str, checks, preamble, judged=instructions.judge
):
    """A check's items answered under eval.* and judged by `judged`, with the model's source and the seconds."""
    e, t0 = cfg.eval, time.time()
    replies, stopped = instructions.answer(
        model, tokenizer, checks, e.instructions_max_new_tokens, e.batch_size, preamble, sampling_of(e)
    )
    result = instructions.score(checks, replies, stopped, judged)
    return result | {
        "model_path": source,
        "settings": _check_settings(cfg),
        "seconds": round(time.time() - t0, 1),
    }


def check_second_set(cfg: config_lib.Config, name: str, model, tokenizer, source: str, preamble: str | None):
    """The second check (instructify/evals/second_set.py) of one model, into <output_dir>/instructions-second.json:
    measured whenever the first is, never stored (it is for comparing a run's own models)."""
    from instructify.evals import second_set

    checks = second_set.items(per_kind=cfg.eval.instructions)
    result = _answered(cfg, model, tokenizer, source, checks, preamble, second_set.judge)
    instructions.write(cfg.output_dir, name, result, second_set.FILE)
    log.info("%s: second check %.1f%% of %d correct", name, 100 * result["score"], len(checks))


def _tools_on(cfg: config_lib.Config) -> bool:
    return bool(cfg.eval.tools or cfg.eval.bfcl)


def _tools_settings(cfg: config_lib.Config, constrained: bool = False) -> dict:
    e = cfg.eval
    settings = {"tools": e.tools, "conversations": e.tools_conversations, "bfcl": e.bfcl,
                "max_new_tokens": e.tools_max_new_tokens}  # fmt: skip
    return settings | ({"constrained": True} if constrained else {})  # free entries stay as stored


def _stored_tools(cfg: config_lib.Config, name: str, source: str) -> bool:
    stored = tool_calls.read(Path(cfg.output_dir)).get(name, {})
    return stored.get("model_path") == source and stored.get("settings") == _tools_settings(cfg)


def check_tools(
    cfg: config_lib.Config,
    name: str,
    model,
    tokenizer,
    source: str,
    shown: dict | None = None,
    constrained: bool = False,
) -> None:
    """The tool-call check and BFCL (instructify/evals/tool_calls.py) of one model, into <output_dir>/tools.json;
    `shown` (an untrained model): reused from eval.stored, or measured and stored; `constrained`: calls held
    to the offered schemas (eval.tools_grammar)."""
    e = cfg.eval
    if not _tools_on(cfg):
        return
    out = Path(cfg.output_dir)
    k = _store_key(cfg, "tools", name, source, _tools_settings(cfg, constrained), shown)
    if _reused(cfg, k, lambda entry, _: tool_calls.write(out, name, entry)):
        return
    t0 = time.time()
    result: dict = {"model_path": source, "settings": _tools_settings(cfg, constrained)}
    if e.tools:
        result["check"] = tool_calls.check(
            model,
            tokenizer,
            e.tools,
            e.tools_conversations,
            e.tools_max_new_tokens,
            e.batch_size,
            constrained,
        )
        c = result["check"]
        log.info("%s: tool check %.1f%% conform, %.1f%% right of %d turns", name, 100 * c["conforms"],
                 100 * c["right"], c["n"])  # fmt: skip
    if e.bfcl:
        result["bfcl"] = tool_calls.run_bfcl(
            model, tokenizer, e.bfcl, e.tools_max_new_tokens, e.batch_size, cfg.training.seed, constrained
        )
        cats = result["bfcl"]["categories"]
        log.info("%s: BFCL %s", name, ", ".join(f"{k} {v['accuracy']:.1%}" for k, v in cats.items()))
    result["seconds"] = round(time.time() - t0, 1)
    tool_calls.write(out, name, result)
    if k:
        stored.save(e.stored, k, result)


def check_base_incontext(cfg: config_lib.Config) -> None:
    """The base model under the in-context prompt (eval.incontext): what an untrained base answers when shown how."""
    from instructify.chat import incontext

    name = "base (in-context)"
    if not cfg.eval.instructions or not cfg.eval.incontext or _stored_check(cfg, name, cfg.model.name):
        return
    preamble = incontext.load(cfg.eval.incontext)
    shown = {"incontext": stored.fingerprint(preamble), "model": model_shown(cfg)}
    out = Path(cfg.output_dir)
    k = _store_key(cfg, "instructions", name, cfg.model.name, _check_settings(cfg), shown)
    if _reused(cfg, k, lambda entry, _: instructions.write(out, name, entry)):
        return
    model, tokenizer = load(cfg.model)
    check_instructions(cfg, name, model, tokenizer, cfg.model.name, preamble, shown)


def print_report(out: Path, show: int) -> None:
    """report.md and plots from everything evaluated so far; the tables and a few replies on the console."""
    from instructify.evals import report

    path = report.write(out)
    entries = conformance.read_report(out)
    print("\n" + report.table(entries) + "\n")
    checked = instructions.read(out)
    if checked:
        print(report.instructions_table(checked) + "\n")
    tooled = tool_calls.read(out)
    if tooled:
        print(report.tools_table(tooled) + "\n\n" + report.bfcl_table(tooled) + "\n")
    for name in report.ordered(entries):
        for s in entries[name].get("samples", [])[:show]:
            print(
                f"[{name}] user: {s['prompt'][:80]!r}\n[{name}] reply: {s['reply'][:160]!r}  stopped={s['stopped']}"
            )
    print(f"\nreport: {path} (plots beside it)")
