"""`instructify <command> [--config FILE] [key=value ...]`: parse argv, call one stage.

Commands: train (every stage in order), sft, export, eval, chat, push, prepare, inspect, doctor, config.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from instructify import config as config_lib

log = logging.getLogger("instructify")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="instructify", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    # in this order: it is the order `instructify --help` lists them in
    _add_training_commands(sub)
    _add_data_commands(sub)
    _add_model_commands(sub)
    _add_serve_command(sub)
    _add_ship_commands(sub)
    return p


def _command(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand with the flags every config-driven command takes: --config and dotted overrides."""
    c = sub.add_parser(name, help=help)
    c.add_argument("--config", default="configs/quickstart.yaml", help="YAML config (default: %(default)s)")
    c.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.max_steps=50 lora.r=8")
    return c


def _add_training_commands(sub) -> None:
    """train, sft, export."""
    _command(sub, "train", help="every stage: base eval, sft, export, trained eval, before/after table")
    _command(sub, "sft", help="fine-tune and write <output_dir>/adapter")
    exp = _command(sub, "export", help="merge the adapter into <output_dir>/model; --gguf also writes a GGUF")
    exp.add_argument(
        "--gguf",
        metavar="bf16|f16|q8_0",
        help="also write <output_dir>/<name>-<dtype>.gguf and an Ollama Modelfile (from model/ when it exists)",
    )
    exp.add_argument("--model", help="with --gguf: the model folder to write (default: <output_dir>/model)")


def _add_data_commands(sub) -> None:
    """synth, prepare, inspect."""
    _command(
        sub,
        "synth",
        help="write instruction conversations from a model (self-instruct + in-context); synth.output",
    )
    _command(sub, "prepare", help="tokenise and cache the training data; print token-length statistics")
    ins = _command(sub, "inspect", help="show each training example with the trained tokens highlighted")
    ins.add_argument(
        "--data", help="a data file or folder in any supported format (default: the config's sources)"
    )
    ins.add_argument("--limit", type=int, default=5, help="examples to show (default: %(default)s)")
    ins.add_argument(
        "--jsonl", type=Path, help="write messages, input_ids, tokens, labels per example to this file"
    )


def _add_model_commands(sub) -> None:
    """eval, chat."""
    ev = _command(
        sub, "eval", help="template conformance of a model folder on the held-out prompts; report.md"
    )
    ev.add_argument("--model", help="model folder (default: <output_dir>/model)")
    ev.add_argument("--name", default=None, help="entry name in report.json (default: trained)")
    ev.add_argument(
        "--reference",
        help="also evaluate this reference model: folder, Hub id, .gguf or pypi:<package> "
        "(default: eval.reference, unless report.json already holds it)",
    )
    _command(
        sub,
        "improve",
        help="rounds on the model's own checked answers after SFT (rejection sampling): round-N/, improve.json",
    )
    hr = _command(
        sub,
        "headroom",
        help="pass@1 greedy and pass@k sampled per kind of checkable prompt, apart from the check; headroom.json",
    )
    hr.add_argument("--model", help="model folder (default: <output_dir>/model)")
    hr.add_argument("--name", default=None, help="entry name in headroom.json (default: trained)")
    hr.add_argument("--per-kind", type=int, default=25, help="prompts of each kind (default: %(default)s)")
    hr.add_argument("--k", type=int, default=8, help="samples per prompt (default: %(default)s)")
    hr.add_argument(
        "--seed", type=int, default=7, help="of the prompts and the sampling (default: %(default)s)"
    )
    ch = _command(
        sub, "chat", help="chat with a model through its template, streaming; /system TEXT, /reset, /exit"
    )
    ch.add_argument("--model", help="model folder, .gguf or pypi:<package> (default: <output_dir>/model)")
    ch.add_argument("--system", help="system message (default: the template's own, if any)")
    ch.add_argument("--max-new-tokens", type=int, default=256, help="per reply (default: %(default)s)")


def _add_serve_command(sub) -> None:
    sv = _command(sub, "serve", help="OpenAI-compatible chat API over a model folder (loopback by default)")
    sv.add_argument("--model", help="model folder doctor accepts (default: <output_dir>/model)")
    sv.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)"
    )
    sv.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    sv.add_argument(
        "--max-batch", type=int, default=8, help="requests generated together (default: %(default)s)"
    )
    sv.add_argument(
        "--no-tool-grammar",
        dest="tool_grammar",
        action="store_false",
        help="let calls break the offered schemas (default: held to them as generated, as llama-server does)",
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


def _add_ship_commands(sub) -> None:
    """push, doctor (its own flags: it takes a path, not overrides), config."""
    pu = _command(
        sub, "push", help="upload the merged model (or adapter) with a model card to the Hub (private)"
    )
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
    cfg = _command(sub, "config", help="print the resolved config, or every key with --keys")
    cfg.add_argument("--keys", action="store_true", help="list every config key with its default and meaning")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "datasets", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    from instructify import commands

    if args.command == "doctor" and args.path:
        return commands.doctor(args.path)
    try:
        cfg = config_lib.load(args.config, getattr(args, "overrides", []), schedule=args.command != "config")
    except config_lib.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    if args.command == "doctor":
        return commands.doctor(str(Path(cfg.output_dir) / "model"))
    if args.command == "config":
        return commands.show_config(cfg, args)

    # Before any model's first matmul: training, evaluation and serving each meet a new shape at most steps.
    from instructify import kernels

    kernels.bound_kernel_caches()
    # Heavy imports only for the commands that need them: `config` stays instant.
    from instructify import runs
    from instructify.chat import incontext, template
    from instructify.data import records
    from instructify.ship import export
    from instructify.synth import prompts
    from instructify.training import distributed, guard, support

    try:
        return commands.COMMANDS[args.command](cfg, args)
    except distributed.LaunchError as e:
        if os.environ.get("RANK", "0") == "0":  # every rank finds the same problem: say it once
            print(f"error: {e}", file=sys.stderr)
        return 1
    except commands.NoModel as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (guard.Preempted, guard.Diverged) as e:
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except (
        records.DataError,
        export.ExportError,
        template.TemplateError,
        runs.RunError,
        prompts.SynthError,
        incontext.InContextError,
        support.UnsupportedModel,
        FileNotFoundError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
