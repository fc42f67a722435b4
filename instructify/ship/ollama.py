"""The Ollama Modelfile: our ChatML template, tools included, in Go's text/template syntax.

Ollama renders `.Messages` (system messages included), `.Tools` and each call's `.ToolCalls`; it finds a model's
calls by the text after `{{ .ToolCalls }}`'s block starts (`<tool_call>`). The text equals our Jinja render
(instructify/chat/template.py) with one difference Ollama imposes: JSON (tool schemas, earlier calls' arguments) is
written by Go's encoding/json, compact, `<`/`>`/`&` escaped, schema fields in Ollama's order. Tests render both on
the same conversations, the Go side with Debian's Go (scripts/ollama_render.go), and compare them.
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerBase

from instructify.chat import template, tools

# No `{{-`/`-}}` trimming: every newline below is one the Jinja template writes. The first system message moves
# into the tools block (as in Jinja); a run of tool results shares one user turn, closed when a non-tool message
# follows or the conversation ends.
_TOOLS = (
    "{{ if .Tools }}<|im_start|>system\n"
    '{{ range $i, $m := .Messages }}{{ if and (eq $i 0) (eq $m.Role "system") }}{{ $m.Content }}\n\n{{ end }}'
    "{{ end }}"
    + tools.TOOLS_HEAD
    + "{{ range .Tools }}\n{{ json . }}{{ end }}"
    + tools.TOOLS_TAIL
    + "<|im_end|>\n{{ end }}"
)
_BODY = (
    '{{ $prev := "" }}{{ range $i, $m := .Messages }}'
    '{{ if and (eq $prev "tool") (ne .Role "tool") }}<|im_end|>\n{{ end }}'
    '{{ if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}'
    "{{ range $j, $c := .ToolCalls }}{{ if or $j $m.Content }}\n{{ end }}"
    '<tool_call>\n{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}\n</tool_call>{{ end }}'
    "<|im_end|>\n"
    '{{ else if eq .Role "tool" }}{{ if ne $prev "tool" }}<|im_start|>user{{ end }}'
    "\n<tool_response>\n{{ .Content }}\n</tool_response>"
    '{{ else if and (eq $i 0) $.Tools (eq .Role "system") }}'
    "{{ else }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "{{ $prev = .Role }}{{ end }}"
    '{{ if eq $prev "tool" }}<|im_end|>\n{{ end }}<|im_start|>assistant\n'
)
TEMPLATE = _TOOLS + _BODY


def modelfile(gguf_file: Path, tok: PreTrainedTokenizerBase, generation: dict | None = None) -> str:
    """An Ollama Modelfile: TEMPLATE (Ollama's llama.cpp runner adds the BOS the GGUF asks for, so it has none),
    stop at <|im_end|>, the decoding default of generation_config.json (Ollama would otherwise sample at its own
    temperature), and the run's default system prompt, if any."""
    lines = [
        f"FROM ./{gguf_file.name}",
        f'TEMPLATE """{TEMPLATE}"""',
        f'PARAMETER stop "{template.IM_END}"',
    ]
    if generation is not None:
        sampled = generation.get("do_sample") and generation.get("temperature")
        lines.append(f"PARAMETER temperature {generation['temperature'] if sampled else 0}")
        if sampled and generation.get("top_p"):
            lines.append(f"PARAMETER top_p {generation['top_p']}")
    system = template.default_system(tok, tok.chat_template)
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"
