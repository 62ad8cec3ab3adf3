"""Training works: the generated model's loss backpropagates, and its gradients equal
transformers' parameter by parameter.

The tiny replica of each generated test_parity.py (HF_CONFIG, randomise, MODEL_CONFIG) is built
in transformers, randomised, saved and loaded through model.py's own loader; both models, in
train mode and float32, take the next-token cross-entropy on the same batch. Gradients are
paired through the checkpoint key names (model.py's checkpoint_keys: key -> parameter name).

transformers builds its embedding with ``padding_idx=pad_token_id``, so the padding token's row
gets no gradient from the lookup; so does model.py's (Config.pad_token_id). The padding token is
put in the batch, and ``test_padding_row_gradient`` checks that row on its own.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import GENERATED, import_path

transformers = pytest.importorskip("transformers")

MODELS = ["SmolLM2-135M-Instruct", "gemma-3-1b-it"]
RELATIVE_TOLERANCE = 1e-4  # max |grad difference| / max |grad|, per parameter


def gradients(name: str, tmp_path) -> tuple[float, float, dict[str, tuple[torch.Tensor, torch.Tensor]], int | None]:
    """(loss, reference loss, {checkpoint key: (our grad, transformers' grad)}, padding token id)."""
    parity = import_path(GENERATED / name / "test_parity.py", f"llmgen_training_{name.replace('-', '_')}")
    generated = parity.load_generated_model()
    generator = torch.Generator().manual_seed(1)
    config = transformers.AutoConfig.for_model(**parity.HF_CONFIG)
    reference = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    parity.randomise(reference, generator)
    reference.save_pretrained(tmp_path)
    model_config = generated.Config(**parity.MODEL_CONFIG)
    model = generated.load_checkpoint(tmp_path, model_config, dtype=torch.float32)
    reference.train()
    model.train()
    ids = torch.randint(0, model_config.vocab_size - 8, (parity.BATCH, parity.SEQ_LEN), generator=generator)
    pad = parity.HF_CONFIG.get("pad_token_id")
    if pad is not None:
        ids[0, 3] = pad  # in the batch: its embedding row gets a gradient from the lookup (or not)
    expected = reference(input_ids=ids, labels=ids).loss
    logits = model(ids)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
    expected.backward()
    loss.backward()
    ours = dict(model.named_parameters())
    theirs = dict(reference.named_parameters())
    keys = generated.checkpoint_keys(model_config)  # checkpoint key -> our parameter name
    assert sorted(keys.values()) == sorted(ours), "model.py has parameters no checkpoint key names"
    pairs = {}
    for key, param in keys.items():
        assert key in theirs, f"{key}: not a parameter of the transformers model"
        pairs[key] = (ours[param].grad, theirs[key].grad)
    return loss.item(), expected.item(), pairs, pad


@pytest.mark.parametrize("name", MODELS)
def test_gradients_match_transformers(name: str, tmp_path) -> None:
    loss, expected, pairs, pad = gradients(name, tmp_path)
    assert abs(loss - expected) <= 1e-5 * abs(expected), (loss, expected)
    worst = 0.0
    for key, (ours, theirs) in pairs.items():
        assert ours is not None, f"{key}: no gradient reached it"
        scale = theirs.abs().max().item()
        assert scale > 0, f"{key}: transformers' gradient is zero, the comparison would prove nothing"
        relative = (ours - theirs).abs().max().item() / scale
        worst = max(worst, relative)
        assert relative <= RELATIVE_TOLERANCE, f"{key}: max relative gradient difference {relative:.3g}"
    print(f"{name}: loss {loss:.6f} vs {expected:.6f}; {len(pairs)} parameters, max relative grad difference {worst:.3g}")


def test_padding_row_gradient(tmp_path) -> None:
    """The padding token's embedding row gets no gradient from the lookup, on both sides."""
    _, _, pairs, pad = gradients(MODELS[0], tmp_path)
    ours, theirs = pairs["model.embed_tokens.weight"]
    # tied head: the row still gets the output head's gradient, but none from the lookup, on both sides
    assert pad is not None and torch.equal(ours[pad], theirs[pad])


def test_an_optimizer_step_lowers_the_loss(tmp_path) -> None:
    """A few SGD steps on one batch: the loss goes down (the parameters are trainable)."""
    parity = import_path(GENERATED / MODELS[0] / "test_parity.py", "llmgen_training_sgd")
    generated = parity.load_generated_model()
    generator = torch.Generator().manual_seed(2)
    config = transformers.AutoConfig.for_model(**parity.HF_CONFIG)
    reference = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    parity.randomise(reference, generator)
    reference.save_pretrained(tmp_path)
    model_config = generated.Config(**parity.MODEL_CONFIG)
    model = generated.load_checkpoint(tmp_path, model_config, dtype=torch.float32).train()
    ids = torch.randint(0, model_config.vocab_size, (2, 12), generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(5):
        logits = model(ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
