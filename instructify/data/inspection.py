"""`instructify inspect`: see exactly what the model trains on, token by token.

Trained tokens (each assistant reply and its <|im_end|>) are bold green, the rest dim; a thin bar separates tokens.
`--jsonl` writes one object per example: messages, input_ids, tokens, labels (-100 where not trained).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.text import Text


def examples(train, limit: int | None = None) -> Iterator[dict]:
    """Rows of a prepared training set as inspect shows and writes them."""
    n = len(train) if limit is None else min(limit, len(train))
    for row in train.select(range(n)):
        labels = [t if m else -100 for t, m in zip(row["input_ids"], row["assistant_masks"])]
        yield {"messages": json.loads(row["messages"]), "input_ids": row["input_ids"], "labels": labels}


def render(tokenizer, example: dict) -> Text:
    text = Text()
    for i, (tid, label) in enumerate(zip(example["input_ids"], example["labels"])):
        piece = tokenizer.decode([tid]).replace("\n", "\\n\n")
        if i:
            text.append("|", style="grey35")
        text.append(piece, style="bold green" if label != -100 else "dim")
    return text


def run(tokenizer, train, limit: int | None, jsonl: Path | None, console: Console | None = None) -> int:
    console = console or Console(highlight=False)
    if jsonl:
        jsonl.parent.mkdir(parents=True, exist_ok=True)
    out = jsonl.open("w") if jsonl else None
    count = 0
    for i, ex in enumerate(examples(train, limit)):
        ex["tokens"] = tokenizer.convert_ids_to_tokens(ex["input_ids"])
        trained = sum(label != -100 for label in ex["labels"])
        if out:
            out.write(json.dumps(ex) + "\n")
        else:
            console.rule(f"example {i}: {len(ex['input_ids'])} tokens, {trained} trained")
            console.print(render(tokenizer, ex))
        count += 1
    if out:
        out.close()
        console.print(f"wrote {count} examples to {jsonl}")
    return count
