"""report.md and plots from crafted eval results; when the training monitor checks."""

import json

from instructify.config import EvalConfig
from instructify.evals import report
from instructify.evals.conformance import Reply, summarize, wilson, write_report
from instructify.training.monitor import ConformanceMonitor


def test_report_shows_every_model_side_by_side_with_the_curve(tmp_path):
    prompts = [
        {"id": f"p{i}", "messages": [{"role": "user", "content": f"question {i}"}], "prior_turns": 1}
        for i in range(4)
    ]
    replies = {
        "reference": [Reply(f"p{i}", 1, "sure " * 30, 64, False, True, loop=True) for i in range(4)],
        "base": [Reply(f"p{i}", 1, "user\nmore", 64, False, True, leak=True) for i in range(4)],
        "trained": [Reply(f"p{i}", 1, f"answer {i}", 3, True, False) for i in range(4)],
    }
    for name, rs in replies.items():
        write_report(
            tmp_path,
            name,
            {**summarize(rs), "eval_loss": 2.5, "stop_token_prob": 0.4, "stop_token_top1": 0.75},
            rs,
            prompts,
        )
    curve = [
        {"step": 0, "stop_token_prob": 0.0, "eval_loss": 9.1},
        {"step": 10, "stop_token_prob": 0.6, "eval_loss": 3.2, "stop_rate": 0.9, "train_loss": 3.0},
    ]
    (tmp_path / "curve.jsonl").write_text("".join(json.dumps(c) + "\n" for c in curve))

    md = report.write(tmp_path).read_text()
    rows = [
        line
        for line in md.splitlines()
        if line.startswith("| base") or line.startswith("| trained") or line.startswith("| reference")
    ]
    assert [r.split(" |")[0] for r in rows[:3]] == ["| base", "| trained", "| reference"]
    assert rows[1].startswith("| trained | 4 | 100.0% (51%-100%) | 100.0%")
    # the curve table: one column per metric any check logged, "-" where a check did not compute it
    assert "| step | stop_token_prob | eval_loss | stop_rate |" in md
    assert "| 0 | 0.0% | 9.100 | - |" in md and "| 10 | 60.0% | 3.200 | 90.0% |" in md
    assert "![curve](curve.png)" in md
    # the same prompt answered by each model, with flags
    sample = md.split("#### prompt `p0`")[1].split("####")[0]
    assert "**trained** (3 tokens; stopped)" in sample and "**base** (64 tokens; runaway, leak)" in sample
    for png in ("metrics.png", "curve.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_report_without_curve_or_teacher_forcing(tmp_path):
    rs = [Reply("p0", 3, "hi", 1, True, False)]
    write_report(
        tmp_path,
        "trained",
        summarize(rs),
        rs,
        [{"id": "p0", "messages": [{"role": "user", "content": "q"}], "prior_turns": 3}],
    )
    md = report.write(tmp_path).read_text()
    assert "During training" not in md and not (tmp_path / "curve.png").exists()
    assert "| trained | 1 | 100.0%" in md and "| 1 / 1 (n=1) |" in md


def test_monitor_checks_at_start_every_n_steps_and_at_the_end(tmp_path):
    prompts = [{"id": "a"}]
    every = {"max_new_tokens": 16, "monitor_conversations": 64, "monitor_generate_conversations": 8}
    m = ConformanceMonitor(
        None, prompts, tmp_path / "c.jsonl", EvalConfig(monitor_every=25, monitor_generate_every=50, **every)
    )
    due = {s: m.due(s, 110) for s in range(111)}
    assert [s for s, (score, _) in due.items() if score] == [0, 25, 50, 75, 100, 110]
    assert [s for s, (_, gen) in due.items() if gen] == [0, 50, 100, 110]
    off = ConformanceMonitor(
        None, prompts, tmp_path / "c.jsonl", EvalConfig(monitor_every=0, monitor_generate_every=0, **every)
    )
    assert not any(any(off.due(s, 10)) for s in range(11))
    none = EvalConfig(monitor_every=5, monitor_generate_every=5, **every)
    assert ConformanceMonitor(None, [], tmp_path / "c.jsonl", none).due(0, 10) == (False, False)


def test_fast_inference_changes_no_output_and_restores_the_weights(gemma_like):
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instructify.chat import template
    from instructify.config import LoraConfig
    from instructify.training import model as model_lib
    from instructify.training.monitor import fast_inference

    base, tok = AutoModelForCausalLM.from_pretrained(gemma_like), AutoTokenizer.from_pretrained(gemma_like)
    tokens = template.add_chat_tokens(base, tok)
    peft_model = get_peft_model(base, model_lib.lora_config(LoraConfig(r=4), tokens.new_token_ids, base))
    with torch.no_grad():  # trained rows differ from the frozen ones
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    frozen = peft_model.get_input_embeddings().token_adapter.base_layer.weight
    before = frozen.detach().clone()
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "hi there"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        with fast_inference(peft_model):
            got = peft_model(input_ids=ids).logits
            assert not torch.equal(frozen[tokens.im_end_id], before[tokens.im_end_id])  # rows merged in
    torch.testing.assert_close(got, expected)
    assert torch.equal(frozen, before)  # and copied back exactly


def test_every_interval_holds_its_rate():
    """Wilson's bounds at k = 0 and k = n came out a rounding error inside the rate (6 of 6: 0.9999999999999999),
    and the report's plot refused the negative error bar."""
    for n in range(1, 301):
        for k in range(n + 1):
            lo, hi = wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)


def test_report_of_a_few_replies_all_or_none_stopped(tmp_path):
    """Tiny evaluations (1 to 10 prompts, every reply stopped or none) give a report and plots, no traceback."""
    for n in range(1, 11):
        for stopped in (True, False):
            out = tmp_path / f"{n}-{stopped}"
            prompts = [
                {"id": f"p{i}", "messages": [{"role": "user", "content": "q"}], "prior_turns": 1}
                for i in range(n)
            ]
            rs = [Reply(f"p{i}", 1, "hi", 2, stopped, not stopped) for i in range(n)]
            write_report(out, "trained", summarize(rs), rs, prompts)
            report.write(out)
            assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
