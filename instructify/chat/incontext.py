"""A base model as an assistant without training: an in-context alignment prompt (URIAL, Lin et al. 2023).

The preamble and its few examples live in one editable file (data/synth/incontext.md): a short instruction, then
`# Query:` / `# Answer:` pairs with each text in triple backticks. A conversation is appended in the same form
and the model continues after the opening backticks of its answer, until it closes them. Used by `synth` (the
base model writes the replies to distil) and by the instruction check (the base row under the same prompt).
"""

from __future__ import annotations

import re
from pathlib import Path

FENCE = "```"


class InContextError(ValueError):
    pass


def load(path: str | Path) -> str:
    """The preamble file's text, checked for the form the renderer continues."""
    p = Path(path)
    if not p.is_file():
        raise InContextError(f"{p}: in-context prompt file not found (synth.incontext)")
    text = p.read_text()
    if "# Query:" not in text or "# Answer:" not in text or text.count(FENCE) % 2:
        raise InContextError(
            f"{p}: an in-context prompt needs `# Query:` / `# Answer:` examples with each text in a pair "
            f"of {FENCE} fences (data/synth/incontext.md shows the form)"
        )
    return text.rstrip() + "\n\n"


def render(messages: list[dict]) -> str:
    """The conversation so far as Query/Answer pairs, then an open answer fence: what follows the preamble.
    A system message goes first as a note for this conversation."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(f"# Note for this conversation:\n{FENCE}{m['content']}{FENCE}\n\n")
        elif m["role"] == "user":
            parts.append(f"# Query:\n{FENCE}{m['content']}{FENCE}\n\n")
        else:
            parts.append(f"# Answer:\n{FENCE}\n{m['content']}\n{FENCE}\n\n")
    return "".join(parts) + f"# Answer:\n{FENCE}\n"


def reordered(preamble: str) -> str:
    """The same preamble with its examples in reverse order: a base model leans towards the answer of the example
    it saw last (after a "No." example it says no to most yes/no questions), so an answer that survives the
    reordering is the model's, not the order's."""
    head, *examples = re.split(r"(?m)^(?=# Query:$)", preamble)  # the header may name "# Query:" inline
    return head + "".join(e.rstrip() + "\n\n" for e in reversed(examples))
