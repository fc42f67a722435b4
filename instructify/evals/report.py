"""The run's reports from what eval and the training monitor wrote: report.md (the console table, reply lengths,
the curve against the step, sample replies side by side) and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

ORDER = {"base": 0, "trained": 1, "trained (schema-held)": 2, "reference": 3}
RATES = ("stop_rate", "clean_stop_rate", "runaway_rate", "loop_rate", "leak_rate", "empty_rate")


def read_curve(path: Path) -> list[dict]:
    """The training monitor's checks (curve.jsonl), one dict per check; none when the file is missing."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def ordered(report: dict) -> list[str]:
    return sorted(report, key=lambda k: (ORDER.get(k, 4), k))


def _pct(m: dict, key: str) -> str:
    if key not in m:
        return "-"
    lo, hi = m[f"{key}_ci95"]
    return f"{m[key]:.1%} ({lo:.0%}-{hi:.0%})"


def table(report: dict) -> str:
    """Markdown table of every model in the report: base, trained, reference, then any other."""
    rows = [
        "| model | n | stop_rate (95% CI) | clean_stop_rate (95% CI) | runaway | loop | leak | empty "
        "| reply tokens median / p90 | stop_token_prob | stop_token_top1 | eval_loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ordered(report):
        m = report[name]
        lengths = m.get("reply_tokens", {})
        tf = (
            (f"{m['stop_token_prob']:.3f}", f"{m['stop_token_top1']:.1%}", f"{m['eval_loss']:.2f}")
            if "eval_loss" in m
            else ("-", "-", "-")
        )
        rows.append(
            f"| {name} | {m['n']} | {_pct(m, 'stop_rate')} | {_pct(m, 'clean_stop_rate')} | "
            + " | ".join(f"{m.get(k, 0):.1%}" for k in RATES[2:])
            + f" | {lengths.get('median', m.get('reply_tokens_median', '-'))} / {lengths.get('p90', '-')} | "
            + " | ".join(tf)
            + " |"
        )
    return "\n".join(rows)


CHECK_ORDER = {"base": 0, "base (in-context)": 1, "trained": 2, "reference": 3}


def instructions_table(checked: dict) -> str:
    """Markdown table of the instruction check: share correct overall (95% CI) and by kind, per model."""
    names = sorted(checked, key=lambda k: (CHECK_ORDER.get(k, 4), k))
    kinds = list(next(iter(checked.values()))["by_kind"]) if checked else []
    rows = [
        "| instruction check | n | correct (95% CI) | correct and stopped | " + " | ".join(kinds) + " |",
        "|---|---|---|---|" + "---|" * len(kinds),
    ]
    for name in names:
        m = checked[name]
        lo, hi = m["score_ci95"]
        by = " | ".join(
            f"{m['by_kind'][k]['correct']}/{m['by_kind'][k]['n']}" if k in m["by_kind"] else "-"
            for k in kinds
        )
        rows.append(
            f"| {name} | {m['n']} | {m['score']:.1%} ({lo:.0%}-{hi:.0%}) | {m['stopped_correct']:.1%} | {by} |"
        )
    return "\n".join(rows)


# FunctionGemma (Gemma 3 270M fine-tuned by Google for function calling), as its model card reports BFCL; quoted,
# not measured here (its card's setup, all items of each category).
FUNCTIONGEMMA = {"simple": 0.616, "multiple": 0.635, "parallel": 0.390, "parallel_multiple": 0.295,
                 "irrelevance": 0.737}  # fmt: skip


def tools_table(tooled: dict) -> str:
    """Markdown table of the held-out tool check per model."""
    rows = [
        "| tool check | turns | conform (95% CI) | stopped | right | right calls | missed calls | false calls |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ordered(tooled):
        c = tooled[name].get("check")
        if c:
            lo, hi = c["conforms_ci95"]
            rows.append(
                f"| {name} | {c['n']} | {c['conforms']:.1%} ({lo:.0%}-{hi:.0%}) | {c['stopped']:.1%} | "
                f"{c['right']:.1%} | {c['right_calls']:.1%} of {c['calls_due']} | {c['missed_calls']:.1%} | "
                f"{c['false_calls']:.1%} of {c['text_due']} |"
            )
    return "\n".join(rows)


def bfcl_table(tooled: dict) -> str:
    """Markdown table of BFCL accuracy per category per model, FunctionGemma's published figures last."""
    cats = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")
    rows = ["| BFCL (AST) | items | " + " | ".join(cats) + " |", "|---|---|" + "---|" * len(cats)]
    for name in ordered(tooled):
        b = tooled[name].get("bfcl")
        if b:
            cells = [f"{b['categories'][k]['accuracy']:.1%}" if k in b["categories"] else "-" for k in cats]
            rows.append(f"| {name} | {b['items']} | " + " | ".join(cells) + " |")
    cells = [f"{FUNCTIONGEMMA[k]:.1%}" for k in cats]
    rows.append("| FunctionGemma 270M (its model card, quoted) | all | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def lengths_table(report: dict) -> str:
    """Reply length (tokens) by the number of turns before the reply: median / p90 (n)."""
    turns = sorted({int(t) for m in report.values() for t in m.get("reply_tokens_by_prior_turns", {})})
    rows = [
        "| model | " + " | ".join(f"{t} prior turns" for t in turns) + " |",
        "|---|" + "---|" * len(turns),
    ]
    for name in ordered(report):
        by = report[name].get("reply_tokens_by_prior_turns", {})
        cells = [
            f"{by[str(t)]['median']} / {by[str(t)]['p90']} (n={by[str(t)]['n']})" if str(t) in by else "-"
            for t in turns
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def curve_table(curve: list[dict]) -> str:
    keys = [
        k
        for k in (
            "stop_token_prob",
            "stop_token_top1",
            "eval_loss",
            "stop_rate",
            "clean_stop_rate",
            "loop_rate",
        )
        if any(k in c for c in curve)
    ]
    rows = ["| step | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for c in curve:
        cells = [("-" if k not in c else f"{c[k]:.3f}" if k == "eval_loss" else f"{c[k]:.1%}") for k in keys]
        rows.append(f"| {c['step']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _samples(out_dir: Path, names: list[str], count: int) -> str:
    """The same held-out prompts answered by each model, with each reply's flags."""
    replies = {}
    for name in names:
        path = out_dir / f"samples-{name}.jsonl"
        if path.is_file():
            replies[name] = {r["prompt_id"]: r for r in map(json.loads, path.read_text().splitlines())}
    if not replies:
        return ""
    first = next(iter(replies.values()))
    parts = []
    for pid in list(first)[:count]:
        messages = first[pid]["messages"]
        shown = "\n".join(f"> **{m['role']}**: {m['content'][:300]}" for m in messages[-3:])
        parts.append(f"#### prompt `{pid}` ({len(messages)} prior turns, last three shown)\n\n{shown}\n")
        for name, by_id in replies.items():
            r = by_id.get(pid)
            if r is None:
                continue
            flags = [f for f in ("stopped", "runaway", "loop", "leak", "empty") if r.get(f)]
            parts.append(
                f"- **{name}** ({r['tokens']} tokens; {', '.join(flags) or 'no stop'}): `{r['text'][:400]!r}`"
            )
        parts.append("")
    return "\n".join(parts)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot(out_dir: Path, report: dict, curve: list[dict]) -> list[Path]:
    """metrics.png: the rates side by side with 95% intervals; curve.png: conformance and loss against the step."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display
    import matplotlib.pyplot as plt

    written = []
    names = ordered(report)
    if names:
        fig, ax = plt.subplots(figsize=(9, 4))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            m = report[name]
            values = [m.get(k, 0.0) for k in RATES]
            errors = [
                [v - m.get(f"{k}_ci95", (v, v))[0] for k, v in zip(RATES, values)],
                [m.get(f"{k}_ci95", (v, v))[1] - v for k, v in zip(RATES, values)],
            ]
            xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(RATES))]
            ax.bar(xs, values, width, yerr=errors, capsize=3, label=f"{name} (n={m['n']})")
        ax.set_xticks(range(len(RATES)), [k.removesuffix("_rate") for k in RATES])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("share of held-out replies")
        ax.set_title("Template conformance (95% intervals)")
        ax.legend()
        written.append(_save(fig, out_dir / "metrics.png"))
    if curve:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for key, style in (
            ("stop_token_prob", "o-"),
            ("stop_token_top1", "s-"),
            ("stop_rate", "^-"),
            ("clean_stop_rate", "v-"),
        ):
            points = [(c["step"], c[key]) for c in curve if key in c]
            if points:
                left.plot(*zip(*points), style, label=key)
        left.set_xlabel("step")
        left.set_ylim(0, 1.05)
        left.set_title("Learning to stop (held-out prompts)")
        left.legend()
        for key in ("eval_loss", "train_loss"):
            points = [(c["step"], c[key]) for c in curve if key in c]
            if points:
                right.plot(*zip(*points), "o-", label=key)
        right.set_xlabel("step")
        right.set_title("Loss on assistant tokens")
        right.legend()
        written.append(_save(fig, out_dir / "curve.png"))
    return written


def headroom_section(out_dir: Path) -> list[str]:
    """report.md's headroom lines, from headroom.json when `instructify headroom` wrote one."""
    path = out_dir / "headroom.json"
    if not path.is_file():
        return []
    from instructify.evals import headroom

    return [
        "## Headroom",
        "",
        "Checkable prompts seeded apart from the check (instructify/evals/headroom.py, `instructify headroom`): "
        "right and stopped greedy, on average per sample, and in at least one of k samples (pass@k), the "
        "ceiling of a round on the model's own checked answers.",
        "",
        headroom.table(json.loads(path.read_text())),
        "",
    ]


def write(out_dir: Path, samples: int = 5) -> Path:
    """report.md (and the PNGs) from report.json, curve.jsonl and samples-*.jsonl in `out_dir`."""
    from instructify.evals.instructions import read as instructions_read

    report = json.loads((out_dir / "report.json").read_text())
    curve = read_curve(out_dir / "curve.jsonl")
    images = plot(out_dir, report, curve)
    parts = [
        "# Template conformance report",
        "",
        "Held-out conversations, greedy decoding, each model with its own generation_config. "
        "stop: the reply ended on `<|im_end|>`; clean_stop: stopped, non-empty, no leaked template structure; "
        "runaway: hit max_new_tokens; loop: an 8-token sequence 3+ times or a sentence said twice; leak: `<|im_start|>`, `<|im_end|>` as "
        "text, or a role header; stop_token_prob / top1: teacher-forced, at the end of each gold reply.",
        "",
        table(report),
        "",
        "## Reply length (tokens) by prior turns: median / p90",
        "",
        lengths_table(report),
        "",
    ]
    checked = instructions_read(out_dir)
    if checked:
        parts += [
            "## Instruction check",
            "",
            "Simple instructions judged by program (instructify/evals/instructions.py), greedy: capital cities, arithmetic, "
            "list N things (count), one-word translations, yes/no facts. base: through the ChatML template as "
            "above; base (in-context): the untrained base under the in-context prompt (eval.incontext).",
            "",
            instructions_table(checked),
            "",
        ]
    parts += headroom_section(out_dir)
    from instructify.evals.tool_calls import read as tools_read

    tooled = tools_read(out_dir)
    if tooled:
        parts += [
            "## Tool calls",
            "",
            "Held-out tool conversations (eval.tools; functions in no training row), every assistant turn, greedy. "
            "conform: ended on `<|im_end|>`, parses as text or `<tool_call>` blocks, each call names an offered "
            "function with arguments that meet its schema, nothing after the last call, no invented "
            "`<tool_response>`; right: the gold calls (any order), or no call where text is due; false calls: a "
            "call where none was due. Models whose template ignores `tools` get the tools block in their system "
            "turn.",
            "",
            tools_table(tooled),
            "",
            "BFCL v4 AST categories (bfcl-eval's data, a seeded sample per category; instructify/evals/bfcl.py, "
            "whose verdicts agree with BFCL's own checker: bench/bfcl-crosscheck.json).",
            "",
            bfcl_table(tooled),
            "",
        ]
    if any(p.name == "metrics.png" for p in images):
        parts += ["![metrics](metrics.png)", ""]
    if curve:
        parts += ["## During training", "", curve_table(curve), "", "![curve](curve.png)", ""]
    kept = out_dir / "kept.json"
    if kept.is_file():
        k = json.loads(kept.read_text())
        parts += [
            f"The adapter holds the weights of step {k['step']} of {k['last_step']} (`training.keep: best`; greedy "
            f"check scores, clean stops minus loops plus the share right of eval.monitor_instructions when set: {', '.join(f'{s}: {v:.2f}' for s, v in k['scores'].items())}).",
            "",
        ]
    parts += ["## Sample replies", "", _samples(out_dir, ordered(report), samples)]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts))
    return path
