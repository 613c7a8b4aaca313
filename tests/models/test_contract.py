"""The model contract, checked for every registered model (../shared/design.md, "Contracts").

Chunk-and-state semantics (whole == chunks == token by token), causality, numerical health at
length 2,048, size reporting, and that a tiny model learns a trivial task.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sepbench import models
from sepbench.errors import SepbenchError
from sepbench.models.base import EMBEDDING_STD, MIXERS

VOCAB = 11


def hybrid_mixers() -> list[str]:
    recurrent = next(m for m in ("mamba", "lstm", "s4d", "gru") if m in MIXERS)
    return [recurrent, "attention"]


def tiny(name: str, width: int = 16, layers: int = 2, **params) -> models.SequenceModel:
    torch.manual_seed(0)
    if name == "hybrid":
        return models.build(name, VOCAB, width, mixers=hybrid_mixers(), **params)
    return models.build(name, VOCAB, width, layers, **params)


def tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, length), generator=generator)


MODELS = models.names()
GROWING_STATE = {  # a KV cache of every token: the state grows with the length
    "transformer", "hybrid", "recurrent_transformer", "feedback_transformer",
    "universal_transformer",
}


@pytest.mark.parametrize("name", MODELS)
def test_whole_equals_chunks_equals_steps(name: str) -> None:
    model = tiny(name).eval()
    x = tokens(3, 29)
    with torch.no_grad():
        whole, _ = model(x)
        pieces, state, start = [], None, 0
        for size in (5, 1, 8, 15):
            chunk, state = model(x[:, start : start + size], state)
            pieces.append(chunk)
            start += size
        steps, state = [], None
        for t in range(x.shape[1]):
            step, state = model(x[:, t : t + 1], state)
            steps.append(step)
    torch.testing.assert_close(torch.cat(pieces, 1), whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(steps, 1), whole, atol=1e-5, rtol=1e-5)
    assert state.position == x.shape[1]


@pytest.mark.parametrize("name", MODELS)
def test_causal(name: str) -> None:
    model = tiny(name).eval()
    x = tokens(2, 24)
    y = x.clone()
    y[:, 11:] = tokens(2, 13, seed=1)
    with torch.no_grad():
        a, _ = model(x)
        b, _ = model(y)
    torch.testing.assert_close(a[:, :11], b[:, :11], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(a[:, 11:], b[:, 11:])


@pytest.mark.parametrize("name", MODELS)
def test_finite_outputs_and_gradients_at_length_2048(name: str) -> None:
    model = tiny(name, width=32)
    logits, _ = model(tokens(1, 2048))
    assert torch.isfinite(logits).all()
    loss = nn.functional.cross_entropy(logits[0, :-1], tokens(1, 2048)[0, 1:])
    loss.backward()
    for parameter_name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, parameter_name
            assert torch.isfinite(parameter.grad).all(), parameter_name


@pytest.mark.parametrize("name", MODELS)
def test_sizes_are_reported(name: str) -> None:
    model = tiny(name)
    expected = sum(p.numel() for p in model.parameters())
    assert model.num_parameters() == expected > 0
    small, large = model.state_size(100), model.state_size(200)
    assert isinstance(small, int) and small > 0
    assert (large > small) if name in GROWING_STATE else (large == small)


@pytest.mark.parametrize("name", MODELS)
def test_learns_to_predict_the_previous_token(name: str) -> None:
    """A trivial task every mixer can solve: output the token one step back."""
    torch.manual_seed(0)
    model = tiny(name, width=32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        x = torch.randint(1, VOCAB, (32, 16), generator=generator)
        logits, _ = model(x)
        loss = nn.functional.cross_entropy(logits[:, 1:].reshape(-1, VOCAB), x[:, :-1].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x = torch.randint(1, VOCAB, (256, 16), generator=generator)
    with torch.no_grad():
        logits, _ = model(x)
    accuracy = (logits[:, 1:].argmax(-1) == x[:, :-1]).float().mean().item()
    assert accuracy >= 0.99, f"{name}: {accuracy:.3f}"


def test_unknown_model_and_parameter_fail_with_one_line() -> None:
    with pytest.raises(SepbenchError, match=r"known: .*transformer"):
        models.build("no_such_model", VOCAB, 16, 1)
    with pytest.raises(SepbenchError, match="unknown parameter 'no_such_param'"):
        models.build("transformer", VOCAB, 16, 1, no_such_param=3)
    with pytest.raises(SepbenchError, match="norm"):
        models.build("transformer", VOCAB, 16, 1, norm="batchnorm")


@pytest.mark.parametrize("name", MODELS)
def test_shared_options(name: str) -> None:
    frozen = tiny(name, embedding="frozen_sinusoidal", norm="rmsnorm", mlp=True)
    assert not frozen.embedding.weight.requires_grad
    assert frozen.head.weight is frozen.embedding.weight
    untied = tiny(name, tie_head=False, mlp=False)
    assert untied.head.weight is not untied.embedding.weight
    assert all(block.feedforward is None for block in untied.blocks)
    logits, _ = frozen(tokens(2, 7))
    assert logits.shape == (2, 7, VOCAB)


def test_sinusoidal_positions_match_the_token_embeddings_scale() -> None:
    """Neither swamps the other at the start: each coordinate of a position row has root mean
    square EMBEDDING_STD, the token embeddings' and the learned table's init std."""
    model = models.build("transformer", VOCAB, 64, 1, positional="sinusoidal", max_length=512)
    table = model.positions.weight
    assert not table.requires_grad
    embedding = model.embedding.weight.detach()
    assert float(table.pow(2).mean().sqrt()) == pytest.approx(EMBEDDING_STD, rel=0.01)
    assert float(embedding.std()) == pytest.approx(EMBEDDING_STD, rel=0.2)
    learned = models.build("transformer", VOCAB, 64, 1, max_length=512).positions.weight.detach()
    assert float(learned.std()) == pytest.approx(EMBEDDING_STD, rel=0.05)
    assert model.positional == "sinusoidal"
    frozen = models.build(
        "transformer", VOCAB, 64, 1, positional="sinusoidal", embedding="frozen_sinusoidal"
    )
    token_rms = float(frozen.embedding.weight.pow(2).mean().sqrt())
    position_rms = float(frozen.positions.weight.pow(2).mean().sqrt())
    assert position_rms == pytest.approx(token_rms, rel=0.01) == pytest.approx(0.5**0.5, rel=0.01)
    assert models.build("lstm", VOCAB, 8, 1).positional == "none"
