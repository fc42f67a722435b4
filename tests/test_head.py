"""The trained-positions head must give the model's own loss and train the output rows of the new tokens."""

import pytest
import torch
from conftest import TINY_SHAPE
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from instructify.chat import template
from instructify.config import LoraConfig
from instructify.modules import head
from instructify.training.model import lora_config


def peft_model(path):
    model, tok = (
        AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        AutoTokenizer.from_pretrained(path),
    )
    tokens = template.add_chat_tokens(model, tok)
    torch.manual_seed(0)
    pm = get_peft_model(model, lora_config(LoraConfig(r=4, alpha=8), tokens.new_token_ids, model))
    with torch.no_grad():  # non-zero LoRA B and token rows, so the check covers every path
        for _, p in pm.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    head.install(pm.get_base_model())
    return pm, tok, tokens


def test_loss_matches_full_logits(gemma_like):
    pm, tok, tokens = peft_model(gemma_like)
    ids = torch.tensor(
        [
            tok.apply_chat_template(
                [
                    {"role": "user", "content": "hi there"},
                    {"role": "assistant", "content": "what did you do"},
                ],
                tokenize=True,
                return_dict=True,
            )["input_ids"]
        ]
    )
    labels = ids.clone()
    labels[:, :6] = -100
    fused = pm(input_ids=ids, labels=labels, fused_lm_head=True)
    reference = pm(
        input_ids=ids, labels=labels
    )  # the model's own forward: full logits through PEFT's wrapper
    torch.testing.assert_close(fused.loss, reference.loss, atol=1e-4, rtol=1e-4)
    logp = torch.log_softmax(reference.logits[0, :-1].float(), -1)
    mask = labels[0, 1:] != -100
    expected = logp.gather(1, ids[0, 1:, None]).squeeze(1)[mask]
    torch.testing.assert_close(fused.log_probs[0][mask], expected, atol=1e-4, rtol=1e-4)
    assert (fused.log_probs[0][~mask] == 0).all() and fused.label_mask.sum() == mask.sum()


def test_chunked_scoring_matches_one_chunk(gemma_like, monkeypatch):
    pm, tok, _ = peft_model(gemma_like)
    ids = torch.randint(5, 200, (2, 12))
    whole = pm(input_ids=ids, labels=ids, fused_lm_head=True)
    monkeypatch.setattr(head, "CHUNK_ELEMENTS", 3 * pm.get_output_embeddings().weight.shape[0])
    chunked = pm(input_ids=ids, labels=ids, fused_lm_head=True)
    torch.testing.assert_close(chunked.loss, whole.loss)


def _autograd_reference(hidden, targets, weight, indices, rows, softcap):
    """The same scores through plain autograd on the full logits (what head.score replaces)."""
    logp = torch.log_softmax(head.project(hidden, weight, indices, rows, softcap).float(), -1)
    return (
        logp.gather(1, targets[:, None]).squeeze(1),
        -(logp.exp() * logp).sum(-1),
        logp.argmax(-1) == targets,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("keep_logits", [True, False])
def test_score_gradients_match_autograd(dtype, softcap, keep_logits, monkeypatch):
    """The closed-form backward (kept or recomputed logits, several chunks) against autograd's log-softmax."""
    monkeypatch.setattr(head, "CHUNK_ELEMENTS", 5 * 50)  # 5 rows per chunk, in blocks of 2
    monkeypatch.setattr(head, "BLOCK_ELEMENTS", 2 * 50)
    monkeypatch.setattr(head, "KEEP_LOGIT_ELEMENTS", 10**9 if keep_logits else 0)
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(50, 16, generator=g).to(dtype)
    indices = torch.tensor([47, 3])
    rows0 = torch.randn(2, 16, generator=g)
    hidden0 = torch.randn(13, 16, generator=g).to(dtype)
    targets = torch.tensor([47, 3, 1, 2, 47, 5, 6, 7, 8, 9, 3, 11, 12])
    upstream = torch.randn(13, generator=g)
    results = []
    for fn in (head.score, _autograd_reference):
        hidden, rows = hidden0.clone().requires_grad_(), rows0.clone().requires_grad_()
        log_probs, entropy, top1 = fn(hidden, targets, weight, indices, rows, softcap)
        (log_probs * upstream).sum().backward()
        results.append((log_probs, entropy, top1, hidden.grad, rows.grad))
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    for ours, reference in zip(*results):
        torch.testing.assert_close(ours.float(), reference.float(), **tol)


def test_output_row_of_im_end_gets_gradient_through_the_head(gemma_like):
    """<|im_end|> only as a label, never as an input: its row can only learn through the output layer."""
    pm, tok, tokens = peft_model(gemma_like)
    ids = torch.tensor(
        [tok("hi there how are you", add_special_tokens=True)["input_ids"] + [tokens.im_end_id]]
    )
    assert (ids[0, :-1] != tokens.im_end_id).all()
    pm(input_ids=ids, labels=ids, fused_lm_head=True).loss.backward()
    adapter = pm.get_base_model().get_input_embeddings().token_adapter
    grad = adapter.trainable_tokens_delta["default"].grad
    row = adapter.token_indices["default"].index(tokens.im_end_id)
    assert grad[row].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_rows_lookup_matches_peft(gemma_like, dtype):
    """Input embedding with the trainable rows looked up in place: PEFT's values and row gradients."""
    from instructify.modules import token_rows

    pm, tok, tokens = peft_model(gemma_like)
    pm = pm.to(dtype)
    for layer in pm.modules():  # trainable rows stay fp32, as in training
        if hasattr(layer, "trainable_tokens_delta"):
            layer.trainable_tokens_delta.float()
    embed = pm.get_base_model().get_input_embeddings()
    ids = torch.tensor([[5, tokens.im_start_id, 9, tokens.im_end_id, tokens.im_start_id], [7, 8, 9, 10, 11]])
    results = []
    for patch in (False, True):
        if patch:
            assert token_rows.install(pm) == 1
        rows = embed.token_adapter.trainable_tokens_delta["default"]
        rows.grad = None
        out = embed(ids)
        (out.float() * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        results.append((out, rows.grad.clone()))
    (peft_out, peft_grad), (ours_out, ours_grad) = results
    torch.testing.assert_close(ours_out, peft_out, atol=0, rtol=0)
    tol = {"atol": 1e-6, "rtol": 1e-6} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}
    torch.testing.assert_close(ours_grad, peft_grad, **tol)
    assert ours_grad.abs().sum() > 0
    layer = embed.token_adapter
    layer.merge()  # merged (as during the monitor's generation checks): PEFT's own path, same values
    torch.testing.assert_close(embed(ids), peft_out, atol=0, rtol=0)
    layer.unmerge()


@pytest.mark.parametrize("family", ["granite", "cohere"])
def test_scaled_logits_give_the_models_own_loss(tmp_path, gemma_like, family):
    """Granite divides its logits by `logits_scaling`, Cohere multiplies them by `logit_scale`: the head and the
    teacher-forced eval score what the model's own forward computes."""
    from transformers import CohereConfig, CohereForCausalLM, GraniteConfig, GraniteForCausalLM

    from instructify.evals import conformance

    tok = AutoTokenizer.from_pretrained(gemma_like)
    shape = dict(vocab_size=len(tok), **TINY_SHAPE, max_position_embeddings=512)
    torch.manual_seed(0)
    if family == "granite":
        model = GraniteForCausalLM(GraniteConfig(**shape, logits_scaling=8.0, tie_word_embeddings=True))
    else:
        model = CohereForCausalLM(CohereConfig(**shape, logit_scale=0.25, tie_word_embeddings=True))
    model.save_pretrained(tmp_path / family)
    tok.save_pretrained(tmp_path / family)
    pm, tok, _ = peft_model(tmp_path / family)
    conv = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "what did you do"}]
    ids = torch.tensor([tok.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"]])
    labels = ids.clone()
    labels[:, :6] = -100
    fused = pm(input_ids=ids, labels=labels, fused_lm_head=True)
    reference = pm(input_ids=ids, labels=labels)  # the model's own forward, its scaling included
    torch.testing.assert_close(fused.loss, reference.loss, atol=1e-4, rtol=1e-4)
    # teacher-forced: the probability of the reply's last token (<|im_end|>) as the own forward gives it
    prompt = {"messages": conv[:1], "reference": conv[1]["content"]}
    got = conformance.teacher_forced(pm, tok, [prompt])["stop_token_prob"]
    full = tok.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = pm(input_ids=torch.tensor([full])).logits[0]
    end = full.index(tok.convert_tokens_to_ids(template.IM_END), len(full) - 3)
    expected = torch.softmax(logits[end - 1].float(), -1)[full[end]].item()
    assert got == pytest.approx(expected, rel=1e-3, abs=1e-6)


def test_decision_weight_scales_only_the_decision_targets_and_only_in_training(gemma_like):
    pm, tok, _ = peft_model(gemma_like)
    ids = torch.tensor(
        [
            tok.apply_chat_template(
                [
                    {"role": "user", "content": "hi there"},
                    {"role": "assistant", "content": "what did you do"},
                ],
                tokenize=True,
                return_dict=True,
            )["input_ids"]
        ]  # fmt: skip
    )
    labels = ids.clone()
    labels[:, :6] = -100
    plain = pm(input_ids=ids, labels=labels, fused_lm_head=True)
    head.install(pm.get_base_model(), decision_weight=4.0)
    pm.train()
    weighted = pm(input_ids=ids, labels=labels, fused_lm_head=True)
    first = (labels[0, 1:] != -100).nonzero()[0, 0]
    logp = plain.log_probs[0].detach()
    n = (labels[0, 1:] != -100).sum()
    torch.testing.assert_close(weighted.loss, -(logp.sum() + 3 * logp[first]) / n, atol=1e-5, rtol=1e-5)
    pm.eval()
    torch.testing.assert_close(pm(input_ids=ids, labels=labels, fused_lm_head=True).loss, plain.loss)
