"""The trained-positions head must give the model's own loss and train the output rows of the new tokens."""

import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from train import head, template
from train.config import LoraConfig
from train.model import lora_config


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
    monkeypatch.setattr(head, "MAX_LOGIT_ELEMENTS", 3 * pm.get_output_embeddings().weight.shape[0])
    chunked = pm(input_ids=ids, labels=ids, fused_lm_head=True)
    torch.testing.assert_close(chunked.loss, whole.loss)


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
