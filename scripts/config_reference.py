"""Rewrite the config reference table in docs/config-reference.md from the config dataclasses:
`python scripts/config_reference.py`. `tests/test_readme.py` fails when the page is out of date."""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from instructify import config

PAGE = Path(__file__).resolve().parent.parent / "docs" / "config-reference.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def table() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, help in config.describe():
        rows.append(f"| `{key}` | `{'null' if default is None else default}` | {help} |")
    return "\n".join(rows)


def render(text: str) -> str:
    return re.sub(f"{START}.*{END}", f"{START}\n{table()}\n{END}", text, flags=re.DOTALL)


if __name__ == "__main__":
    PAGE.write_text(render(PAGE.read_text()))
