"""Tool calls held to the offered schemas while they are generated, as llama-server does for the same format.

The reply is free text until it writes `<tool_call>`; from there on it can only be calls of offered functions with
arguments that meet their schemas (`<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>`, one or
more separated by a newline; one only under OpenAI's `parallel_tool_calls: false`), then the stop token: nothing
after the last call. `required` allows only calls, a named choice only that function first. llama.cpp's Hermes
handler builds the same lazy grammar (triggered by `<tool_call>`), which is why its server met the conformance target on weights that transformers did not
(docs/tools.md). xgrammar (vLLM's and SGLang's structured-output engine) compiles the structure and masks each
step's scores; ours is only the structure of our format and the per-row bookkeeping of batched generation.
"""

from __future__ import annotations

import json

import torch

from instructify.chat import tools as chat_tools

CALL_HEAD = chat_tools.CALL_OPEN + '\n{"name": "'
ARGUMENTS = '", "arguments": '
CALL_TAIL = "}\n" + chat_tools.CALL_CLOSE
# A JSON value's whitespace is bounded: unbounded, a grammar lets a weak model pad a call with spaces forever.
MAX_WHITESPACE = 2


class GrammarUnavailable(RuntimeError):
    """xgrammar is not installed."""


def _xgrammar():
    try:
        import xgrammar
    except ImportError:
        raise GrammarUnavailable(
            "schema-constrained tool calls need xgrammar: `make setup` installs it "
            "(or pip install 'instructify[grammar]')"
        ) from None
    return xgrammar


def structure(tools: list[dict], choice: str = "auto", parallel: bool = True):
    """The structural tag of a reply to `tools` under `choice` (auto, required, or a function's name); `parallel`
    False: one call at most."""
    from xgrammar import structural_tag as st

    def tag(function: dict):
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        return st.TagFormat(
            begin=CALL_HEAD + function["name"] + ARGUMENTS,
            content=st.JSONSchemaFormat(json_schema=schema, max_whitespace_cnt=MAX_WHITESPACE),
            end=CALL_TAIL,
        )

    functions = [chat_tools.function_of(t) for t in tools]
    tags = [tag(f) for f in functions]
    more = st.StarFormat(
        content=st.SequenceFormat(elements=[st.ConstStringFormat(value="\n"), st.OrFormat(elements=tags)])
    )
    if choice == "auto":
        # text, or text then calls; a <tool_response> is never the model's to write
        first = st.TriggeredTagsFormat(
            triggers=[chat_tools.CALL_OPEN],
            tags=tags,
            excludes=[chat_tools.RESPONSE_OPEN],
            stop_after_first=True,
        )
    elif choice == "required":
        first = st.OrFormat(elements=tags)
    else:
        first = next((t for f, t in zip(functions, tags) if f["name"] == choice), None)
        if first is None:
            raise ValueError(f"tool_choice {choice!r} is not one of the tools")
    return st.StructuralTag(format=st.SequenceFormat(elements=[first, more]) if parallel else first)


class Grammars:
    """Compiled reply grammars for one tokenizer and model: its token table is read once (about 2 s for Gemma's
    262k tokens) and each tool list compiles once (xgrammar's compiler caches by structure)."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: set[int]):
        xgr = _xgrammar()
        self.xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids)
        )
        self.compiler = xgr.GrammarCompiler(info, cache_enabled=True)
        self.vocab_size = vocab_size

    @classmethod
    def of(cls, model, tokenizer, stop_ids: set[int]) -> Grammars:
        return cls(tokenizer, model.get_output_embeddings().weight.shape[0], stop_ids)

    def matcher(
        self, tools: list[dict] | None, choice: str = "auto", prefix: str = "", parallel: bool = True
    ) -> Matcher | None:
        """A row's matcher (None: nothing to hold, no tools or choice none). `prefix`: what the reply was started
        with in the prompt (instructify/serving/tool_replies.py), taken as already written; `parallel` False: one
        call at most."""
        if not tools or choice == "none":
            return None
        tag = structure(tools, choice, parallel)
        compiled = self.compiler.compile_structural_tag(json.dumps(tag.model_dump()))
        matcher = Matcher(self.xgr, compiled, self.vocab_size)
        if prefix and not matcher.inner.accept_string(prefix):
            raise ValueError(f"the reply's start {prefix!r} does not fit its grammar")
        return matcher


class Matcher:
    """One reply's place in its grammar: the tokens it has written are fed in, and it masks the scores of the
    next token to those the grammar allows."""

    def __init__(self, xgr, compiled, vocab_size: int):
        self.xgr = xgr
        self.inner = xgr.GrammarMatcher(compiled)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self.fed = 0  # tokens of the reply already accepted

    def feed(self, reply: list[int]) -> None:
        """Accept the reply's tokens not yet accepted (the reply so far, whole)."""
        for token in reply[self.fed :]:
            if self.inner.is_terminated():
                break
            if not self.inner.accept_token(token):  # a token the mask did not allow: nothing to hold any more
                self.inner = None
                break
            self.fed += 1
        self.fed = len(reply)

    def mask_(self, scores: torch.Tensor) -> None:
        """Mask one row's scores [vocab] in place to the tokens allowed next."""
        if self.inner is None or self.inner.is_terminated():
            return
        self.inner.fill_next_token_bitmask(self.bitmask)
        self.xgr.apply_token_bitmask_inplace(scores.unsqueeze(0), self.bitmask.to(scores.device))
