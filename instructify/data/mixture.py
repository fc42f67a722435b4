"""Every source read, converted and validated into one weighted list; rejected rows counted by reason."""

from __future__ import annotations

import logging
import random

from instructify.chat import tools as chat_tools
from instructify.config import DataConfig
from instructify.data.formats import to_conversation
from instructify.data.records import Conversation, DataError, LoadReport
from instructify.data.sources import read_source
from instructify.data.validate import check_tool_use, merge_consecutive, normal_calls, problem

log = logging.getLogger(__name__)


def load(
    cfg: DataConfig, special_texts: tuple[str, ...], report: LoadReport, system_prompt: str | None = None
) -> list[Conversation]:
    """Every source, converted and validated, weighted into one list (rejects counted in `report`). Conversations
    with tools are checked by the rules of tool use, then flattened to the ChatML text the template renders (the
    tools block in the system turn, with `system_prompt` where the template injects it)."""
    out = []
    for n, src in enumerate(cfg.sources):
        convs = []
        for where, row in read_source(src):
            report.read += 1
            try:
                msgs, tools = to_conversation(row, src.format, src.columns)
            except DataError as e:
                report.reject(where, str(e), getattr(row, "raw", row))
                continue
            if cfg.consecutive == "merge" and all(isinstance(m, dict) and "role" in m for m in msgs):
                msgs, merged = merge_consecutive(msgs)
                report.merged += merged
            with_tools = chat_tools.uses_tools(msgs, tools)
            if with_tools:
                if found := check_tool_use(msgs, tools):
                    report.reject(where, str(found), row)
                    continue
                msgs = chat_tools.flatten(normal_calls(msgs), tools, system_prompt)
            reason = problem(msgs, special_texts)
            if reason:
                report.reject(where, reason, row)
                continue
            key = row.get("id", where.rsplit(":", 1)[-1]) if isinstance(row, dict) else where
            convs.append(Conversation(f"{n}:{key}", msgs, where, with_tools, src.max_length))
        out.extend(weighted(convs, src.weight, cfg.seed))
    return out


def weighted(convs: list[Conversation], weight: float, seed: int) -> list[Conversation]:
    """`weight` x the rows: whole copies, then a seeded sample for the fraction (alignment-handbook's mixer)."""
    whole, frac = int(weight), weight - int(weight)
    sample = random.Random(seed).sample(convs, round(frac * len(convs))) if frac else []
    keep = {id(c) for c in sample}
    return [c for _ in range(whole) for c in convs] + [c for c in convs if id(c) in keep]


def check_rejected(report: LoadReport, max_share: float, where: str) -> None:
    share = sum(report.rejected.values()) / max(report.read, 1)
    if share > max_share:
        raise DataError(
            f"{where}: {share:.0%} of {report.read} rows rejected (limit data.max_rejected={max_share:.0%}):\n  "
            + "\n  ".join(report.lines())
            + "\nsee rejected.jsonl in the run folder for each row and its reason; fix the data, map its columns "
            "(data.sources[].columns), or raise data.max_rejected"
        )
