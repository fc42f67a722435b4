"""What each command does, given the parsed config and arguments: the glue between `instructify` (the parser in
__main__) and the stages (instructify/pipeline.py and one module per command). Each returns the exit code."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from instructify import config as config_lib

log = logging.getLogger("instructify")


class NoModel(FileNotFoundError):
    exit_code = 2


def model_folder(path: str, hub_ok: bool = False) -> Path:
    """The model a command runs on: a folder (a .gguf or pypi:<package> is converted to one once) or, where
    `hub_ok`, a Hub id; the one error when there is none."""
    from instructify.training.model import resolve

    folder = Path(resolve(path))
    if not (folder / "config.json").is_file() and not (
        hub_ok and not folder.exists() and path.count("/") == 1
    ):
        raise NoModel(
            f"{folder}: no model folder; run `instructify train --config FILE` (`make train`) first, or pass --model"
        )
    return folder


def prepare(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    """prepare / inspect: tokenizer and data only, no model weights."""
    from transformers import AutoTokenizer

    from instructify.chat import template
    from instructify.data import inspection, prepare
    from instructify.training import model

    tokenizer = AutoTokenizer.from_pretrained(model.resolve(cfg.model.name), revision=cfg.model.revision)
    tokens = template.add_chat_tokens_from(cfg.template, None, tokenizer)
    if getattr(args, "data", None):
        # a file to check before training on it: every row, no held-out split
        from dataclasses import replace

        from instructify.config import SourceConfig

        source = SourceConfig(path=args.data)
        cfg = replace(cfg, data=replace(cfg.data, sources=[source], eval_share=1e-9, max_rejected=1.0))
    t0 = time.time()
    prepared = prepare.prepare(cfg, tokenizer, tokens, use_cache=not getattr(args, "data", None))
    seconds = time.time() - t0
    for line in prepared.report["lines"]:
        log.info("data: %s", line)
    if args.command == "inspect":
        inspection.run(tokenizer, prepared.train, args.limit, args.jsonl)
        return 0
    stats = prepare.length_stats(
        [len(x) for x in prepared.train["input_ids"]], cfg.training.per_device_batch_size
    )
    kept = prepared.report["kept"] + prepared.report["too_long"]
    stats["over_max_length"] = (prepared.report["too_long"] + prepared.report["truncated"]) / max(kept, 1)
    print(
        f"{'cached' if prepared.cached else 'prepared'} in {seconds:.1f} s: {len(prepared.train)} training examples"
    )
    for key, value in stats.items():
        print(f"  {key:22} {value:.1%}" if isinstance(value, float) else f"  {key:22} {value}")
    return 0


def synth(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    from instructify.synth import write

    p = write.run(cfg)
    print(
        f"{p['output']}: {p['rows']} conversations ({p['multi_turn']} with a follow-up, {p['with_system']} with a "
        f"system prompt) in {p['seconds']['total']:.0f} s by {p['generator']}"
    )
    print(
        f"  prompts: {p['prompts']}\n  replies: {p['replies']}\n  provenance: {p['output']}.provenance.json"
    )
    return 0


def chat(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    from instructify.serving import chat_cli
    from instructify.training.model import load

    source = model_folder(args.model or str(Path(cfg.output_dir) / "model"), hub_ok=True)
    model, tokenizer = load(cfg.model, path=str(source))
    interactive = sys.stdin.isatty()
    chat_cli.run(
        model,
        tokenizer,
        sys.stdin,
        sys.stdout,
        system=args.system,
        max_new_tokens=args.max_new_tokens,
        prompt="you: " if interactive else "",
    )
    return 0


def headroom(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    from instructify.evals import headroom, report
    from instructify.training.model import load

    folder = model_folder(args.model or str(Path(cfg.output_dir) / "model"))
    model, tokenizer = load(cfg.model, path=str(folder))
    sampling = headroom.sampling_of(cfg.template)
    asked = headroom.prompts(args.per_kind, cfg.eval.instructions, args.seed)
    t0 = time.time()
    result = headroom.measure(
        model, tokenizer, asked, args.k, sampling, cfg.eval.max_new_tokens, cfg.eval.batch_size, args.seed
    )
    result |= {"model": str(folder), "prompt_seed": args.seed, "seconds": round(time.time() - t0, 1)}
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = headroom.write(out, args.name or "trained", result)
    if (out / "report.json").is_file():
        report.write(out)
    print(headroom.table({args.name or "trained": result}))
    print(f"{path} ({result['seconds']:.0f} s)")
    return 0


def improve(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    from instructify import improve as improve_lib

    try:
        result = improve_lib.run(cfg)
    except FileNotFoundError as e:
        raise NoModel(str(e)) from None

    def moved(c: dict) -> str:
        m = c["mcnemar"]
        return f"{c['score']['base']:.1%} -> {c['score']['trained']:.1%} (+{m['gained']} -{m['lost']}, McNemar p={m['p']:.3f})"

    for r in result["rounds"]:
        first = {"score": r["check"], "mcnemar": r["mcnemar"]}
        second = f"; second check {moved(r['second_check'])}" if r.get("second_check") else ""
        print(
            f"round {r['round']}: kept {r['counts'].get('kept', 0)} samples of {r['prompts']} prompts; stop "
            f"{r['stop_rate']:.1%}, loops {r['loop_rate']:.1%}; check {moved(first)}{second}; guards failed: "
            f"{', '.join(g for g, ok in r['guards'].items() if not ok) or 'none'}"
        )
    print(f"kept: {result['kept']} ({Path(cfg.output_dir) / improve_lib.FILE})")
    return 0


def serve(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    from instructify.serving import server as http
    from instructify.ship import doctor
    from instructify.training.model import load

    folder = model_folder(args.model or str(Path(cfg.output_dir) / "model"))
    text, ok = doctor.report(doctor.diagnose(folder))
    if not ok:
        print(f"error: {folder}: doctor found problems; not serving a model that would not stop:\n{text}")
        return 1
    api_key = http.api_key_from_env(args.api_key_env)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning(
            "serving on %s without a bearer token: set %s to require one", args.host, args.api_key_env
        )
    model, tokenizer = load(cfg.model, path=str(folder))
    model_id = folder.parent.name if folder.name == "model" else folder.name
    server = http.make_server(
        model,
        tokenizer,
        model_id,
        args.host,
        args.port,
        api_key,
        args.max_batch,
        max_pending=args.max_pending,
        request_timeout=args.request_timeout,
        tool_grammar=args.tool_grammar,
    )
    host, port = server.server_address[:2]
    log.info(
        "serving %s as %r on http://%s:%s/v1 (bearer token %s)",
        folder,
        model_id,
        host,
        port,
        "required" if api_key else "off",
    )
    http.serve_until_stopped(server, args.grace)
    return 0


def push(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    from instructify.ship import push
    from instructify.ship.export import ExportError

    repo_id = (
        args.repo_id or cfg.push.repo_id or (f"your-name/{Path(cfg.output_dir).name}" if args.dry_run else "")
    )
    if not repo_id:
        print("error: no repository: pass --repo-id you/name or set push.repo_id", file=sys.stderr)
        return 2
    try:
        folder = push.build(cfg, repo_id)
    except (push.PushError, ExportError) as e:  # ExportError: doctor refused the model folder
        print(f"error: {e}", file=sys.stderr)
        return 1
    files = sorted(p for p in folder.iterdir())
    print(f"{folder} ({'private' if cfg.push.private else 'PUBLIC'} {repo_id}):")
    for p in files:
        print(f"  {p.name:32} {p.stat().st_size:>12,} bytes")
    if args.dry_run:
        print("\n" + (folder / "README.md").read_text())
        print("dry run: nothing uploaded")
        return 0
    print(f"uploaded: {push.upload(folder, repo_id, cfg.push.private)}")
    return 0


def gguf_source(args: argparse.Namespace, out: Path) -> Path | None:
    """The folder `export --gguf` converts without merging again: --model, or an existing <output_dir>/model."""
    if not args.gguf:
        return None
    folder = Path(args.model) if args.model else out / "model"
    return folder if args.model or (folder / "config.json").is_file() else None


def doctor(path: str) -> int:
    from instructify.ship import doctor
    from instructify.training.model import resolve

    try:
        folder = resolve(path)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not Path(folder).is_dir():
        print(f"error: {path}: not a model folder, .gguf file or pypi:<package>", file=sys.stderr)
        return 2
    text, ok = doctor.report(doctor.diagnose(folder))
    print(text)
    return 0 if ok else 1


def export(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    from instructify.ship import export as export_lib

    out = Path(cfg.output_dir)
    if not gguf_source(args, out):
        export_lib.export(cfg)
    if args.gguf:
        from instructify.ship import gguf_export

        gguf_export.export_gguf(gguf_source(args, out) or out / "model", args.gguf)
    return 0


def evaluate(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    from instructify import pipeline

    folder = model_folder(args.model or str(Path(cfg.output_dir) / "model"))
    pipeline.evaluate_folder(cfg, folder, args.name or "trained", args.reference)
    return 0


def train(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    from instructify import pipeline

    pipeline.train(cfg, evaluate_after=args.command == "train")
    return 0


def show_config(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    if args.keys:
        for key, default, help in config_lib.describe():
            print(f"{key:38} {default!s:32} {help}")
    else:
        import yaml

        print(yaml.safe_dump(config_lib.to_dict(cfg), sort_keys=False))
    return 0


COMMANDS = {
    "train": train,
    "sft": train,
    "synth": synth,
    "prepare": prepare,
    "inspect": prepare,
    "export": export,
    "eval": evaluate,
    "chat": chat,
    "headroom": headroom,
    "improve": improve,
    "serve": serve,
    "push": push,
    "config": show_config,
}
