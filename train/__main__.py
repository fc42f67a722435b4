"""`python -m train <command> [--config FILE] [key=value ...]`: parse argv, call one stage.

Commands: train (every stage in order), sft, export, eval, chat, push, prepare, inspect, doctor, config.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from train import config as config_lib

log = logging.getLogger("train")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument(
            "--config", default="configs/quickstart.yaml", help="YAML config (default: %(default)s)"
        )
        c.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.max_steps=50 lora.r=8")
        return c

    command("train", help="every stage: base eval, sft, export, trained eval, before/after table")
    command("sft", help="fine-tune and write <output_dir>/adapter")
    exp = command("export", help="merge the adapter into <output_dir>/model; --gguf also writes a GGUF")
    exp.add_argument(
        "--gguf",
        metavar="bf16|f16|q8_0",
        help="also write <output_dir>/<name>-<dtype>.gguf and an Ollama Modelfile (from model/ when it exists)",
    )
    exp.add_argument("--model", help="with --gguf: the model folder to write (default: <output_dir>/model)")
    command(
        "synth",
        help="write instruction conversations from a model (self-instruct + in-context); synth.output",
    )
    command("prepare", help="tokenise and cache the training data; print token-length statistics")
    ins = command("inspect", help="show each training example with the trained tokens highlighted")
    ins.add_argument(
        "--data", help="a data file or folder in any supported format (default: the config's sources)"
    )
    ins.add_argument("--limit", type=int, default=5, help="examples to show (default: %(default)s)")
    ins.add_argument(
        "--jsonl", type=Path, help="write messages, input_ids, tokens, labels per example to this file"
    )
    ev = command("eval", help="template conformance of a model folder on the held-out prompts; report.md")
    ev.add_argument("--model", help="model folder (default: <output_dir>/model)")
    ev.add_argument("--name", default=None, help="entry name in report.json (default: trained)")
    ev.add_argument(
        "--reference",
        help="also evaluate this reference model: folder, Hub id, .gguf or pypi:<package> "
        "(default: eval.reference, unless report.json already holds it)",
    )
    ch = command(
        "chat", help="chat with a model through its template, streaming; /system TEXT, /reset, /exit"
    )
    ch.add_argument("--model", help="model folder, .gguf or pypi:<package> (default: <output_dir>/model)")
    ch.add_argument("--system", help="system message (default: the template's own, if any)")
    ch.add_argument("--max-new-tokens", type=int, default=256, help="per reply (default: %(default)s)")
    sv = command("serve", help="OpenAI-compatible chat API over a model folder (loopback by default)")
    sv.add_argument("--model", help="model folder doctor accepts (default: <output_dir>/model)")
    sv.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)"
    )
    sv.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    sv.add_argument(
        "--max-batch", type=int, default=8, help="requests generated together (default: %(default)s)"
    )
    sv.add_argument(
        "--max-pending",
        type=int,
        default=64,
        help="requests allowed to wait for a row; more get 429 with Retry-After (default: %(default)s)",
    )
    sv.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        help="seconds a client has to send its request (else 408), and for each write of the reply "
        "(else its generation is cancelled) (default: %(default)s)",
    )
    sv.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds the running requests get to finish before they are ended (default: %(default)s)",
    )
    sv.add_argument(
        "--api-key-env",
        default="INSTRUCTIFY_API_KEY",
        help="environment variable holding the bearer token clients must send, if set (default: %(default)s)",
    )
    pu = command("push", help="upload the merged model (or adapter) with a model card to the Hub (private)")
    pu.add_argument("--repo-id", help="Hub repository (default: push.repo_id)")
    pu.add_argument(
        "--dry-run", action="store_true", help="write <output_dir>/push and show its files and card only"
    )
    doc = sub.add_parser(
        "doctor", help="check a model folder for the mistakes that make chat models ramble on"
    )
    doc.add_argument(
        "path",
        nargs="?",
        help="model folder, .gguf file, or pypi:<package> shipping a GGUF "
        "(default: <output_dir>/model of --config)",
    )
    doc.add_argument("--config", default="configs/quickstart.yaml", help="used when no path is given")
    cfg = command("config", help="print the resolved config, or every key with --keys")
    cfg.add_argument("--keys", action="store_true", help="list every config key with its default and meaning")
    return p


class NoModel(FileNotFoundError):
    exit_code = 2


def model_folder(path: str, hub_ok: bool = False) -> Path:
    """The model a command runs on: a folder (a .gguf or pypi:<package> is converted to one once) or, where
    `hub_ok`, a Hub id; the one error when there is none."""
    from train.model import resolve

    folder = Path(resolve(path))
    if not (folder / "config.json").is_file() and not (
        hub_ok and not folder.exists() and path.count("/") == 1
    ):
        raise NoModel(f"{folder}: no model folder; run `make train` first or pass --model")
    return folder


def run_prepare(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    """prepare / inspect: tokenizer and data only, no model weights."""
    from transformers import AutoTokenizer

    from train import inspection, model, prepare, template

    tokenizer = AutoTokenizer.from_pretrained(model.resolve(cfg.model.name), revision=cfg.model.revision)
    tokens = template.add_chat_tokens_from(cfg.template, None, tokenizer)
    if getattr(args, "data", None):
        # a file to check before training on it: every row, no held-out split
        from dataclasses import replace

        from train.config import SourceConfig

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


def run_synth(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    from train import synth

    p = synth.run(cfg)
    print(
        f"{p['output']}: {p['rows']} conversations ({p['multi_turn']} with a follow-up, {p['with_system']} with a "
        f"system prompt) in {p['seconds']['total']:.0f} s by {p['generator']}"
    )
    print(
        f"  prompts: {p['prompts']}\n  replies: {p['replies']}\n  provenance: {p['output']}.provenance.json"
    )
    return 0


def run_chat(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    from train import chat
    from train.model import load

    source = model_folder(args.model or str(Path(cfg.output_dir) / "model"), hub_ok=True)
    model, tokenizer = load(cfg.model, path=str(source))
    interactive = sys.stdin.isatty()
    chat.run(
        model,
        tokenizer,
        sys.stdin,
        sys.stdout,
        system=args.system,
        max_new_tokens=args.max_new_tokens,
        prompt="you: " if interactive else "",
    )
    return 0


def run_serve(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    from train import doctor, serve
    from train.model import load

    folder = model_folder(args.model or str(Path(cfg.output_dir) / "model"))
    text, ok = doctor.report(doctor.diagnose(folder))
    if not ok:
        print(f"error: {folder}: doctor found problems; not serving a model that would not stop:\n{text}")
        return 1
    api_key = serve.api_key_from_env(args.api_key_env)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning(
            "serving on %s without a bearer token: set %s to require one", args.host, args.api_key_env
        )
    model, tokenizer = load(cfg.model, path=str(folder))
    model_id = folder.parent.name if folder.name == "model" else folder.name
    server = serve.make_server(
        model,
        tokenizer,
        model_id,
        args.host,
        args.port,
        api_key,
        args.max_batch,
        max_pending=args.max_pending,
        request_timeout=args.request_timeout,
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
    serve.serve_until_stopped(server, args.grace)
    return 0


def run_push(cfg: config_lib.Config, args: argparse.Namespace) -> int:
    from train import push
    from train.export import ExportError

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


COMMANDS = {
    "prepare": run_prepare,
    "inspect": run_prepare,
    "synth": run_synth,
    "chat": run_chat,
    "serve": run_serve,
    "push": run_push,
}


def run_gguf_source(args: argparse.Namespace, out: Path) -> Path | None:
    """The folder `export --gguf` converts without merging again: --model, or an existing <output_dir>/model."""
    if not args.gguf:
        return None
    folder = Path(args.model) if args.model else out / "model"
    return folder if args.model or (folder / "config.json").is_file() else None


def run_doctor(path: str) -> int:
    from train import doctor
    from train.model import resolve

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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    if args.command == "doctor" and args.path:
        return run_doctor(args.path)
    try:
        cfg = config_lib.load(args.config, getattr(args, "overrides", []))
    except config_lib.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    if args.command == "doctor":
        return run_doctor(str(Path(cfg.output_dir) / "model"))
    if args.command == "config":
        if args.keys:
            for key, default, help in config_lib.describe():
                print(f"{key:38} {default!s:32} {help}")
        else:
            import yaml

            print(yaml.safe_dump(config_lib.to_dict(cfg), sort_keys=False))
        return 0

    # Heavy imports only for the commands that need them: `config` stays instant.
    from train import data, distributed, export, guard, incontext, pipeline, runs, synth, template

    out = Path(cfg.output_dir)
    try:
        if args.command in COMMANDS:
            return COMMANDS[args.command](cfg, args)
        if args.command in ("train", "sft"):
            pipeline.train(cfg, evaluate_after=args.command == "train")
        elif args.command == "export":
            if not run_gguf_source(args, out):
                export.export(cfg)
            if args.gguf:
                from train import gguf_export

                gguf_export.export_gguf(run_gguf_source(args, out) or out / "model", args.gguf)
        elif args.command == "eval":
            folder = model_folder(args.model or str(out / "model"))
            pipeline.evaluate_folder(cfg, folder, args.name or "trained", args.reference)
    except distributed.LaunchError as e:
        if os.environ.get("RANK", "0") == "0":  # every rank finds the same problem: say it once
            print(f"error: {e}", file=sys.stderr)
        return 1
    except NoModel as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (guard.Preempted, guard.Diverged) as e:
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except (
        data.DataError,
        export.ExportError,
        template.TemplateError,
        runs.RunError,
        synth.SynthError,
        incontext.InContextError,
        FileNotFoundError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
