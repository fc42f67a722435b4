"""`instructify chat --model PATH`: talk to a model through its own chat template, token by token.

Reads lines from any text stream (a terminal or a pipe, so it is testable), renders the conversation with
`apply_chat_template(add_generation_prompt=True)` as eval does, and generates with the model's generation_config,
so it stops where a user of plain transformers would see it stop: at `<|im_end|>`, or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextStreamer

from instructify.chat.template import IM_END, special_texts, with_system
from instructify.evals.generation import classify, stop_ids_of

HELP = "commands: /system TEXT (set the system message), /reset (new conversation), /exit"


class _Printer(TextStreamer):
    """Writes decoded text to `out` as it is generated (TextStreamer only prints to stdout)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, out: TextIO):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.out = out

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.out.write(text + ("\n" if stream_end else ""))
        self.out.flush()


@torch.no_grad()
def reply(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict],
    max_new_tokens: int,
    out: TextIO,
) -> tuple[str, bool]:
    """Stream one assistant reply to `out`; (its text, whether it ended on <|im_end|>)."""
    batch = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    ).to(model.device)
    out_ids = model.generate(**batch, max_new_tokens=max_new_tokens, streamer=_Printer(tokenizer, out))
    new = out_ids[0, batch["input_ids"].shape[1] :].tolist()
    n, stopped, _ = classify(new, stop_ids_of(model), tokenizer.convert_tokens_to_ids(IM_END), max_new_tokens)
    return tokenizer.decode(new[:n], skip_special_tokens=True), stopped


def run(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    lines: Iterable[str],
    out: TextIO,
    system: str | None = None,
    max_new_tokens: int = 256,
    prompt: str = "",
) -> list[dict]:
    """The chat loop; returns the conversation as it stands at /exit or end of input."""
    model.eval()
    forbidden = special_texts(tokenizer)
    messages: list[dict] = []
    out.write(f"{HELP}\n{prompt}")
    out.flush()
    for line in lines:
        text = line.rstrip("\n")
        command, _, argument = text.partition(" ")
        if command == "/exit":
            break
        if command == "/reset":
            messages = []
            out.write("(new conversation)\n")
        elif command == "/system":
            system = argument.strip() or None
            out.write(f"(system message {'set' if system else 'cleared'})\n")
        elif text.startswith("/"):
            out.write(f"unknown command {command!r}; {HELP}\n")
        elif any(t in text for t in forbidden):
            found = next(t for t in forbidden if t in text)
            out.write(
                f"(not sent: the message holds the special-token text {found}; training rejects it too)\n"
            )
        elif text.strip():
            messages.append({"role": "user", "content": text})
            out.write("assistant: ")
            answer, stopped = reply(model, tokenizer, with_system(messages, system), max_new_tokens, out)
            messages.append({"role": "assistant", "content": answer})
            if not stopped:
                out.write(f"(no <|im_end|> within {max_new_tokens} new tokens: the reply was cut)\n")
        out.write(prompt)
        out.flush()
    return with_system(messages, system)
