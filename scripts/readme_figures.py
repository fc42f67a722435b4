"""The measured figures of README.md and docs/*.md, rendered from the JSON files that hold them.

    python scripts/readme_figures.py                              # rewrite the pages' figure blocks from bench/*.json
    python scripts/readme_figures.py --collect runs/quickstart    # first copy a finished quickstart run's figures
                                                                  # (report.json, curve.jsonl, speed.json) into
                                                                  # bench/quickstart.json
    python scripts/readme_figures.py --collect-tools runs/tools --timeline T.json   # the tools run: bench/tools.json (--tools-as tools-runN)

Each block sits between `<!-- figures:NAME:start -->` and `<!-- figures:NAME:end -->`; tests/test_readme.py fails
when a block differs from what its JSON renders to (a bench re-run without this script, or a hand edit).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_train import BASELINES, table  # noqa: E402

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]  # the pages that may quote figures
BENCH = ROOT / "bench"


def _arms_with_steps(arms: dict) -> dict:
    """Older results lack tokens per timed step; it follows from each run's own counts."""
    out = {}
    for name, a in arms.items():
        runs = a.get("runs", [])
        per_step = [r["tokens"] / r["steps_timed"] for r in runs if r.get("steps_timed")]
        out[name] = {
            "tokens_per_step": round(sorted(per_step)[len(per_step) // 2], 1) if per_step else None,
            "steps_timed": runs[0]["steps_timed"] if runs else None,
            **a,
        }
    return out


def speed(results: dict) -> str:
    if "arms" in results:  # the earlier method: one window of each arm's own first steps
        comparisons = {"a 6-step window of each arm's own order (the earlier method)": results["arms"]}
        ratios = {"own order": results["ratios"]}
    else:
        comparisons = {
            k.replace("_", " "): results[k] for k in ("fixed_batches", "own_order") if k in results
        }
        ratios = {k.replace("_", " "): v for k, v in results["ratios"].items()}
    parts = [f"Measured by `make bench` ({results['what']}; {results['machine']}, {results['seconds']} s):"]
    for kind, arms in comparisons.items():
        reference = next(a for a in BASELINES if a in arms)
        parts += [f"**{kind}**", table(_arms_with_steps(arms), reference)]
    lines = []
    for kind, r in ratios.items():
        lines.append(f"{kind}: " + ", ".join(f"{k} **{v:.2f}x**" for k, v in sorted(r.items())))
    if "headline" in results:
        lines.append(
            "headline, the lower of the two: "
            + ", ".join(f"{k} {v:.2f}x" for k, v in results["headline"].items())
        )
    arms = next(iter(comparisons.values()))
    if all(a.get("eval") for a in arms.values()):
        base = arms["trl-defaults"]["eval"]["eval_loss"]
        diffs = ", ".join(
            f"{n} {100 * (a['eval']['eval_loss'] - base) / base:+.2f}%"
            for n, a in arms.items()
            if n != "trl-defaults"
        )
        top = max(a["eval"]["stop_token_prob"] for a in arms.values())
        lines.append(
            f"held-out eval_loss after the same steps against trl-defaults: {diffs}; stop_token_prob is at most "
            f"{top:.1e} in every arm: after so few steps no arm stops yet, so the stop column says nothing"
        )
    return "\n\n".join(parts) + "\n\n" + "\n".join(f"- {line}" for line in lines)


def eval_speed(data: dict) -> str:
    arms = data["arms"]
    first = next(iter(arms))
    rows = [f"| arm | prompts | batch (slots) | seconds | useful tokens/s | idle row-steps | stop | replies as {first}'s |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    machines = []
    for name, arm in arms.items():
        m = arm["machine"]
        machines.append(
            f"{name}: commit {m['commit']}, {m['dtype']}" + (f", {m['gguf']}" if m.get("gguf") else "")
        )
        for scenario in ("chat", "tools"):
            for i, run in enumerate(arm.get(scenario, [])):
                idle = f"{run['idle_row_steps']:,} ({run['idle_share']:.0%})" if "row_steps" in run else "n/a"
                size = run.get("batch_size", run.get("slots"))
                theirs = arms[first][scenario][i]["replies"]
                same = sum(a.strip() == b.strip() for a, b in zip(run["replies"], theirs))
                rows.append(f"| {name} | {scenario} ({len(run['replies'])}) | {size} | {run['seconds']} | "
                            f"{run['useful_tokens_per_s']} | {idle} | {run['stop_rate']:.1%} | {same} |")  # fmt: skip
    machine = arms[first]["machine"]
    return "\n".join(rows) + (
        f"\n\n`make bench-eval` ({data['what']}) on {machine['cpu']}, {machine['threads']} threads, torch "
        f"{machine['torch']}; " + "; ".join(machines) + "."
    )


def quickstart(data: dict) -> str:
    from instructify.evals.report import instructions_table, ordered
    from instructify.evals.report import table as report_table

    entries = data["report"]
    parts = [report_table({name: entries[name] for name in ordered(entries)})]
    if data.get("instructions"):
        parts.append(instructions_table(data["instructions"]))
    curve = data["curve"]
    probs = ", ".join(f"{c['stop_token_prob']:.3f} ({c['step']})" for c in curve if "stop_token_prob" in c)
    stops = ", ".join(f"{c['stop_rate']:.0%} ({c['step']})" for c in curve if "stop_rate" in c)
    parts.append(
        f"During training (`curve.jsonl`; step in brackets), the probability of `<|im_end|>` at the end of the gold "
        f"reply on held-out prompts: {probs}; greedy replies that stop: {stops}."
    )
    recount = data.get("loop_rate_recounted", {})
    if any(abs(recount[n] - entries[n]["loop_rate"]) > 1e-9 for n in recount):
        parts.append(
            "Counted as `eval` counts loops now (a sentence said twice is a loop too), on the same replies "
            "(`samples-*.jsonl`): "
            + ", ".join(f"{n} {recount[n]:.1%}" for n in ordered(entries) if n in recount)
            + "."
        )
    kept = data.get("kept")
    if kept:
        parts.append(
            f"The exported model holds step {kept['step']} of {kept['last_step']} (`training.keep: best`: the greedy "
            "check on 32 held-out prompts, clean stops minus loops, plus the share right of the instruction items "
            "apart from the check (`eval.monitor_instructions`), at each checkpoint: "
            + ", ".join(f"{v:.2f} ({k})" for k, v in kept["scores"].items())
            + ")."
        )
    synth = data.get("synth")
    if synth:
        parts.append(
            f"Synthetic instructions (`{synth['output']}`, {synth['rows']} conversations, {synth['multi_turn']} with a "
            f"second turn, written by {synth['generator']} in {synth['seconds']['total'] / 60:.0f} min on "
            f"{synth['machine']}): replies kept {synth['replies'].get('kept', 0)}"
            + (
                f" ({retried} of them right on a sampled retry)"
                if (retried := synth["replies"].get(RETRIED))
                else ""
            )
            + ", dropped "
            + ", ".join(
                f"{k} {v}"
                for k, v in sorted(synth["replies"].items(), key=lambda kv: -kv[1])
                if k not in ("kept", RETRIED)
            )
            + "."
        )
    if data.get("wall_seconds"):
        what = (
            "`make train` on a fresh clone (`make setup` included)"
            if data.get("with_setup")
            else "The `train` command"
        )
        parts.append(
            f"{what} took {data['wall_seconds'] / 60:.1f} min from start to report"
            + (
                " (the base model already converted once into `~/.cache/instructify`)."
                if data.get("converted")
                else ", converting the base model into the cache first."
            )
        )
    s = data["speed"]
    run = data["run_json"]
    parts.append(
        f"Training (`speed.json`, on {s.get('cpu', 'a CPU not recorded')}, {s.get('dtype', 'dtype not recorded')}): "
        f"{s['steps_timed']} timed steps of {s['tokens'] / s['steps_timed']:.0f} non-pad tokens each on average, "
        f"{s['step_seconds_mean']:.2f} s a step on average, {s['padding_share']:.1%} padding (packages: "
        + ", ".join(f"{k} {v}" for k, v in run["packages"].items())
        + ")."
    )
    return "\n\n".join(parts)


RETRIED = "right on a sampled retry"  # a count of synth's that is not a drop


def decoding(data: dict) -> str:
    """Greedy vs sampled on the same model (scripts/bench_decoding.py)."""
    parts = []
    for name, e in data["entries"].items():
        how = (
            ""
            if name == "greedy"
            else f" (temperature {e['settings']['temperature']}, top_p {e['settings']['top_p']})"
        )
        parts.append(
            f"{name}{how}: stops on {e['stop_rate']:.1%} of {e['n']} with {e['loop_rate']:.1%} loops, median reply "
            f"{e['reply_tokens']['median']} tokens; instruction check {e['instructions']['score']:.1%} correct"
        )
    return f"`make bench-decoding` ({data['what']}): " + "; ".join(parts) + "."


def serve(data: dict) -> str:
    """bench_serve.py's arms (servers) side by side for each number of clients and client kind, then the burst."""
    rows = [
        "| clients (requests) | client | server | requests/s | latency p50 | p95 | first streamed token p50 "
        "| completion tokens/s | no answer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    arms = list(data["arms"])
    runs = [(arm, r) for arm in arms for r in data["arms"][arm]["runs"]]
    key = lambda x: (x[1]["clients"], x[1]["client"] != "openai", arms.index(x[0]))
    for arm, r in sorted(runs, key=key):
        client = "openai (keep-alive)" if r["client"] == "openai" else "urllib (new connection)"
        rows.append(
            f"| {r['clients']} ({r['requests']}) | {client} | {arm} | {r['requests_per_s']:.2f} | "
            f"{r['latency_p50_s']:.1f} s | {r['latency_p95_s']:.1f} s | {r['first_token_p50_s']:.1f} s | "
            f"{r['completion_tokens_per_s']:.1f} | {r['error_count']} |"
        )
    bursts = []
    for arm in arms:
        b = data["arms"][arm]["burst"]
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(b["answers"].items()))
        bursts.append(
            f"{arm}: {b['http_answers']} of {b['requests']} got an HTTP answer ({answers}), slowest /health "
            f"{b['slowest_health_s']:.2f} s"
        )
    return (
        "\n".join(rows)
        + f"\n\nBurst of {data['arms'][arms[0]]['burst']['requests']} plain requests at once: "
        + "; ".join(bursts)
        + "."
    )


# issue 27's targets for the configs/tools.yaml model: (label, target, whether it is a ceiling)
TOOL_TARGETS = {
    "conform": ("tool-call conformance", 0.98, False),
    "simple": ("BFCL simple", 0.50, False),
    "irrelevance": ("BFCL irrelevance", 0.70, False),
    "stop": ("chat stop (greedy)", 0.98, False),
    "loop": ("chat loops", 0.02, True),
}


MODELS = {"base", "base (in-context)", "trained", "reference"}  # the rest of tools.json is engines


def tools(data: dict) -> str:
    """The configs/tools.yaml run: held-out tool check, BFCL per category (FunctionGemma's card quoted), the same
    model's chat bars, targets met or missed, and where the time went."""
    from instructify.evals.report import FUNCTIONGEMMA, bfcl_table, tools_table

    t, chat = data["tools"]["trained"], data["report"]["trained"]
    cats = t["bfcl"]["categories"]
    got = {
        "conform": t["check"]["conforms"],
        "simple": cats["simple"]["accuracy"],
        "irrelevance": cats["irrelevance"]["accuracy"],
        "stop": chat["stop_rate"],
        "loop": chat["loop_rate"],
    }
    verdicts = []
    for k, (label, target, ceiling) in TOOL_TARGETS.items():
        met = got[k] <= target if ceiling else got[k] >= target
        verdicts.append(
            f"{label} {got[k]:.1%} ({'≤' if ceiling else '≥'} {target:.0%}: {'met' if met else '**missed**'})"
        )
    label, target, _ = TOOL_TARGETS["conform"]
    for name in sorted(
        set(data["tools"]) - MODELS
    ):  # the engines of make check-engines, through their servers
        c, b = data["tools"][name].get("check"), data["tools"][name].get("bfcl")
        if c:
            met = c["conforms"] >= target
            verdicts.append(f"{label} through {name} {c['conforms']:.1%} (≥ {target:.0%}: "
                            f"{'met' if met else '**missed**'})")  # fmt: skip
        for k in ("simple", "irrelevance") if b else ():
            k_label, k_target, _ = TOOL_TARGETS[k]
            acc = b["categories"][k]["accuracy"]
            verdicts.append(f"{k_label} through {name} {acc:.1%} (≥ {k_target:.0%}: "
                            f"{'met' if acc >= k_target else '**missed**'})")  # fmt: skip
    beaten = [k for k in FUNCTIONGEMMA if cats[k]["accuracy"] > FUNCTIONGEMMA[k]]
    fg = (
        "FunctionGemma's card is beaten in " + ", ".join(beaten)
        if beaten
        else "FunctionGemma's card is beaten in no category"
    )
    chat_line = (
        f"chat on the same model: {chat['n']} held-out chat conversations, stop {chat['stop_rate']:.1%}, "
        f"loops {chat['loop_rate']:.1%}, median reply {chat['reply_tokens_median']} tokens"
    )
    tl = data["timeline"]
    time_line = (
        f"time on {data['machine']}: training {tl['train_steps']} steps {tl['train_minutes']:.0f} min "
        f"({data['speed']['step_seconds_median']:.1f} s median step, peak RSS "
        f"{data['speed']['train_peak_rss_mb'] / 1024:.1f} GiB); evaluation: "
        + ", ".join(f"{k} {v:.0f} min" for k, v in tl["eval_minutes"].items())
        + f"; {tl['note']}"
    )
    return "\n\n".join(
        [
            tools_table(data["tools"]),
            bfcl_table(data["tools"]),
            "\n".join(f"- {line}" for line in [*verdicts, fg, chat_line, time_line]),
        ]
    )


def improve_checks(data: dict) -> str:
    """Both instruction checks of improve rounds' models (scripts/bench_second_check.py), correct of 50 per kind."""
    kinds = ("capital", "arithmetic", "list", "translation", "yes/no")
    lines = [
        f"{data['what']}; {data['machine']}, measured {data['measured']}.",
        "",
        "| model | check | " + " | ".join(kinds) + " | second check | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * (2 * len(kinds) + 2),
    ]
    for name in data["models"]:
        row = [name]
        for label in ("check", "second check"):
            e = data[label][name]
            moved = next((v for k, v in e.items() if k.startswith("mcnemar_vs_")), None)
            low = next((v for k, v in e.items() if k.startswith("kinds_below_")), [])
            vs = f" (+{moved['gained']} -{moved['lost']}, p = {moved['p']:.2g})" if moved else ""
            row += [f"{e['score']:.1%}{vs}"] + [f"{e['by_kind'][k]}{' ↓' if k in low else ''}" for k in kinds]
        lines.append("| " + " | ".join(row) + " |")
    first = next(iter(data["models"]))
    lines += [
        "",
        f"McNemar: each model against {first}, item by item; ↓: below {first}'s 95% interval for that kind.",
    ]
    return "\n".join(lines)


def improve_rounds(data: dict) -> str:
    """An `instructify improve` run (its improve.json with what ran, bench/improve-*.json): each round's checks,
    guards and time, and the round kept."""

    def moved(score: dict, m: dict) -> str:
        return f"{score['base']:.1%} -> {score['trained']:.1%} (+{m['gained']} -{m['lost']}, McNemar p = {m['p']:.1g})"

    parts = []
    for r in data["rounds"]:
        failed = [g for g, ok in r["guards"].items() if not ok]
        second = r.get("second_check") or {}
        parts.append(
            f"round {r['round']}: check {moved(r['check'], r['mcnemar'])}"
            + (f", second check {moved(second['score'], second['mcnemar'])}" if second else "")
            + f", stop {r['stop_rate']:.1%}, loops {r['loop_rate']:.1%}, "
            + (f"guards failed: {', '.join(failed)}" if failed else "every guard held")
            + (f", {r['seconds'] / 60:.0f} min" if "seconds" in r else "")
        )
    kept = data["kept"] if data["kept"] != data["start"] else "the start (no round held its guards)"
    return f"{data['what']}: " + "; ".join(parts) + f". Kept: {kept}."


def dpo_micro(data: dict) -> str:
    """bench/dpo-micro.json (scripts/bench_dpo.py): seconds per DPO step, padding and memory by improve.micro_batches."""
    lines = [f"{data['what']}; {data['cpu']}:", "", f"| micro-batches a step | s/step (median) | padding | peak RSS | losses of the {len(data['arms'][0]['losses'])} steps |",
             "|---|---|---|---|---|"]  # fmt: skip
    for a in data["arms"]:
        losses = " ".join(f"{x:.2f}" for x in a["losses"])
        lines.append(
            f"| {a['micro_batches']} | {a['step_seconds_median']:.1f} | {a['padding_share']:.1%} | "
            f"{a['train_peak_rss_mb'] / 1024:.1f} GiB | {losses} |"
        )
    return "\n".join(lines)


BLOCKS = {
    "tools": (BENCH / "tools.json", tools),
    "tools-run1": (BENCH / "tools-run1.json", tools),
    "tools-run2": (BENCH / "tools-run2.json", tools),
    "tools-run3": (BENCH / "tools-run3.json", tools),
    "tools-run5": (BENCH / "tools-run5.json", tools),
    "tools-run6": (BENCH / "tools-run6.json", tools),
    "tools-run7": (BENCH / "tools-run7.json", tools),
    "tools-run8": (BENCH / "tools-run8.json", tools),
    "tools-run4b": (BENCH / "tools-run4b.json", tools),
    "tools-run9": (BENCH / "tools-run9.json", tools),
    "tools-run4s7": (BENCH / "tools-run4s7.json", tools),
    "tools-run9s7": (BENCH / "tools-run9s7.json", tools),
    "tools-run4s3": (BENCH / "tools-run4s3.json", tools),
    "speed": (BENCH / "results.json", speed),
    "eval-speed": (BENCH / "eval.json", eval_speed),
    "quickstart": (BENCH / "quickstart.json", quickstart),
    "quickstart-avx2": (BENCH / "quickstart-avx2.json", quickstart),
    "serve": (BENCH / "serve.json", serve),
    "decoding": (BENCH / "decoding.json", decoding),
    "improve-checks": (BENCH / "improve-second.json", improve_checks),
    "improve-varied": (BENCH / "improve-varied.json", improve_rounds),
    "improve-epyc": (BENCH / "improve-epyc.json", improve_rounds),
    "improve-chat": (BENCH / "improve-chat.json", improve_rounds),
    "improve-chat2": (BENCH / "improve-chat2.json", improve_rounds),
    "improve-arith": (BENCH / "improve-arith.json", improve_rounds),
    "improve-arith200": (BENCH / "improve-arith200.json", improve_rounds),
    "dpo-micro": (BENCH / "dpo-micro.json", dpo_micro),
    "improve-micro4": (BENCH / "improve-micro4.json", improve_rounds),
    "improve-micro1": (BENCH / "improve-micro1.json", improve_rounds),
    "improve-defaults57": (BENCH / "improve-defaults57.json", improve_rounds),
}


def render(text: str) -> str:
    for name, (path, build) in BLOCKS.items():
        start, end = f"<!-- figures:{name}:start -->", f"<!-- figures:{name}:end -->"
        if start in text and path.is_file():
            block = f"{start}\n{build(json.loads(path.read_text()))}\n{end}"
            text = re.sub(
                f"{re.escape(start)}.*?{re.escape(end)}", lambda _, b=block: b, text, flags=re.DOTALL
            )
    return text


def loop_recount(run: Path, report: dict) -> dict:
    """Each model's loop rate on its stored replies (samples-<name>.jsonl) under today's definition (instructify/evals/conformance.py
    `looped`: a token loop as recorded, or a sentence said twice), for runs evaluated before that definition."""
    from instructify.evals.conformance import repeats_sentence

    out = {}
    for name in report:
        path = run / f"samples-{name}.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            out[name] = sum(r["loop"] or repeats_sentence(r["text"]) for r in rows) / len(rows)
    return out


def synth_provenance(run: Path) -> dict | None:
    """The provenance of the synthetic source the run trained on, if any."""
    import yaml

    sources = yaml.safe_load((run / "config.yaml").read_text())["data"]["sources"]
    found = [Path(f"{s['path']}.provenance.json") for s in sources]
    return next((json.loads(p.read_text()) for p in found if p.is_file()), None)


def collect(
    run: Path,
    wall_seconds: float | None = None,
    converted: bool = True,
    name: str = "quickstart",
    with_setup: bool = False,
) -> Path:
    """The figures README quotes from a finished quickstart run, into bench/quickstart.json."""
    from instructify.evals import instructions
    from instructify.evals.conformance import read_report
    from instructify.evals.report import read_curve

    report = {
        name: {k: v for k, v in entry.items() if k not in ("samples", "lengths_by_prior_turns")}
        for name, entry in read_report(run).items()
    }
    data = {
        "run": str(run),
        "report": report,
        "loop_rate_recounted": loop_recount(run, report),
        "instructions": {
            name: {k: v for k, v in entry.items() if k != "replies"}
            for name, entry in instructions.read(run).items()
        },
        "synth": synth_provenance(run),
        "wall_seconds": wall_seconds,
        "converted": converted,
        "with_setup": with_setup,
        "kept": json.loads((run / "kept.json").read_text()) if (run / "kept.json").is_file() else None,
        "curve": read_curve(run / "curve.jsonl"),
        "speed": json.loads((run / "speed.json").read_text()),
        "run_json": {k: v for k, v in json.loads((run / "run.json").read_text()).items() if k != "config"},
    }
    out = BENCH / f"{name}.json"
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out


def collect_tools(run: Path, timeline: dict, name: str = "tools") -> Path:
    """The figures README quotes from a finished configs/tools.yaml run, into bench/NAME.json."""
    from machine import cpu_flags

    from instructify.evals import tool_calls
    from instructify.evals.conformance import read_report

    drop = ("samples", "lengths_by_prior_turns")
    tooled = tool_calls.read(run)
    data = {
        "run": str(run),
        "machine": cpu_flags(),
        "report": {n: {k: v for k, v in e.items() if k not in drop} for n, e in read_report(run).items()},
        "tools": {
            name: {
                part: {k: v for k, v in entry[part].items() if k not in ("replies", "first_difference")}
                for part in ("check", "bfcl", "template_parity")
                if entry.get(part)
            }
            for name, entry in tooled.items()
        },
        "speed": json.loads((run / "speed.json").read_text()),
        "timeline": timeline,
        "run_json": {k: v for k, v in json.loads((run / "run.json").read_text()).items() if k != "config"},
    }
    out = BENCH / f"{name}.json"
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--collect", type=Path, help="a finished quickstart run folder to copy the figures from first"
    )
    p.add_argument(
        "--wall-seconds", type=float, help="with --collect: how long the run's `train` command took, to quote"
    )
    p.add_argument(
        "--converting",
        action="store_true",
        help="with --wall-seconds: the run converted the base model first (an empty cache, a fresh clone)",
    )
    p.add_argument(
        "--with-setup",
        action="store_true",
        help="with --wall-seconds: the time is of `make train` on a fresh clone, `make setup` included",
    )
    p.add_argument(
        "--as",
        dest="collect_as",
        default="quickstart",
        help="with --collect: the bench file it fills (bench/NAME.json): quickstart, or quickstart-avx2 for the AVX2 run",
    )
    p.add_argument(
        "--collect-tools", type=Path, help="a finished configs/tools.yaml run folder, into bench/tools.json"
    )
    p.add_argument(
        "--timeline",
        type=Path,
        help="with --collect-tools: a JSON file of the run's minutes (train_steps, train_minutes, eval_minutes, note)",
    )
    p.add_argument(
        "--tools-as",
        default="tools",
        help="with --collect-tools: the bench file it fills (bench/NAME.json): tools, or tools-runN for a recipe tried",
    )
    args = p.parse_args()
    if args.collect_tools:
        print(
            f"wrote {collect_tools(args.collect_tools, json.loads(args.timeline.read_text()), args.tools_as)}"
        )
    if args.collect:
        print(
            f"wrote {collect(args.collect, args.wall_seconds, not args.converting, args.collect_as, args.with_setup)}"
        )
    for page in PAGES:
        text = page.read_text()
        if render(text) != text:
            page.write_text(render(text))
            print(f"rewrote {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
