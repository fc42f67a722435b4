"""Ollama's render of our Modelfile TEMPLATE against our Jinja render, on every held-out tool conversation.
Writes bench/ollama-parity.json.

    python scripts/ollama_parity.py [--tools data/tools/heldout.jsonl] [--out bench/ollama-parity.json]

The Go side is scripts/ollama_render.go (Go's text/template and encoding/json, Ollama's collate and api field
order), built with Debian's Go (`apt-get install golang-go`). A conversation is the same when every line is equal,
JSON lines (tool schemas, calls) compared as values; byte-identical counts the ones equal as text too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from transformers.utils.chat_template_utils import render_jinja_template  # noqa: E402

from instructify.chat import template, tools  # noqa: E402
from instructify.ship import ollama  # noqa: E402


def json_lines(text: str) -> list:
    """Each line parsed as JSON where it is a JSON object (a tool schema, a call), else the line itself."""
    out = []
    for line in text.split("\n"):
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        out.append(value if isinstance(value, dict) else line)
    return out


def jinja(messages: list[dict], tool_list: list) -> str:
    """Our ChatML template (no BOS: Ollama's runner adds the one the GGUF asks for), rendered as transformers does."""
    rendered, _ = render_jinja_template(
        [messages], tools=tool_list, chat_template=template.chatml_template(False), add_generation_prompt=True
    )
    return rendered[0]


def build_renderer(folder: Path) -> Path:
    """scripts/ollama_render.go built with `go` into `folder`."""
    binary = Path(folder) / "ollama_render"
    source = ROOT / "scripts" / "ollama_render.go"
    subprocess.run(["go", "build", "-o", str(binary), str(source)], check=True, cwd=folder)
    return binary


def go_render(binary: Path, go_template: str, messages: list[dict], tool_list: list, system: str = "") -> str:
    """What Ollama sends to its runner for this chat (`system`: the Modelfile's SYSTEM, first when it has none)."""
    request = {
        "template": go_template,
        "system": system,
        "messages": messages,
        "tools": tools.tool_schemas(tool_list),
    }
    return subprocess.run(
        [str(binary)], input=json.dumps(request), capture_output=True, text=True, check=True
    ).stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tools", default="data/tools/heldout.jsonl")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "ollama-parity.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        binary = build_renderer(Path(tmp))
        go_version = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
        rows = [json.loads(line) for line in Path(args.tools).read_text().splitlines()]
        same = identical = 0
        first = None
        for row in rows:
            go = go_render(binary, ollama.TEMPLATE, row["messages"], row["tools"])
            ours = jinja(row["messages"], row["tools"])
            identical += go == ours
            if json_lines(go) == json_lines(ours):
                same += 1
            elif first is None:
                first = {"id": row.get("id"), "ours": ours, "ollama": go}
    result = {
        "conversations": len(rows),
        "same_lines_json_as_values": same,
        "byte_identical": identical,
        "first_difference": first,
        "source": args.tools,
        "go": go_version,
        "why_not_byte_identical": "Ollama writes JSON with Go's encoding/json: compact, <>& escaped, parameters' "
        "required before properties",
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "first_difference"}, indent=1))
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
