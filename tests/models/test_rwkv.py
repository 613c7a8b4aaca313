"""RWKV-4: Hugging Face's pure-torch RWKV as the reference, blocked WKV against the step, errors."""

from __future__ import annotations

import pytest
import torch

from sepbench import models
from sepbench.errors import SepbenchError
from sepbench.models.base import FEEDFORWARDS
from sepbench.models.rwkv import ChannelMix, TimeMix, wkv_blocks, wkv_step
from tests.models.chunks import run_in_chunks

WIDTH = 8
# HF's one-token path broadcasts its (batch, width) shift against (batch, 1, width) wrongly for
# batch > 1, so the reference is fed chunks of two or more tokens.
SPLITS = ((0, 11), (11, 13), (13, 19))


def inputs(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, length, WIDTH, generator=torch.Generator().manual_seed(seed))




def hugging_face_modules():
    transformers = pytest.importorskip(
        "transformers", reason="the RWKV reference check needs the optional `transformers`"
    )
    from transformers.models.rwkv import modeling_rwkv

    config = transformers.RwkvConfig(
        vocab_size=5, hidden_size=WIDTH, num_hidden_layers=1, intermediate_size=4 * WIDTH
    )
    return modeling_rwkv.RwkvSelfAttention(config, 0), modeling_rwkv.RwkvFeedForward(config, 0)


def hugging_face_state(batch: int) -> list[torch.Tensor]:
    """HF's five state tensors (batch, width, layers): shifts, then num, den and max."""
    zeros = [torch.zeros(batch, WIDTH, 1) for _ in range(4)]
    return [*zeros, torch.full((batch, WIDTH, 1), -1e38)]


def randomised(module: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter away from its init so a mis-wired copy cannot agree by chance."""
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return module


def copy_into(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, parameter in theirs.named_parameters():
            own = dict(ours.named_parameters())[name.replace("time_mix_", "mix_")]
            parameter.copy_(own.view(parameter.shape))


def test_time_mixing_matches_hugging_face_with_carried_state() -> None:
    attention, _ = hugging_face_modules()
    torch.manual_seed(0)
    ours = randomised(TimeMix(WIDTH, chunk=4))
    copy_into(ours, attention)
    x = inputs(2, SPLITS[-1][1])
    state = hugging_face_state(2)
    ours_state = None
    with torch.no_grad():
        for start, end in SPLITS:
            expected, state = attention(x[:, start:end], state=state, use_cache=True)
            ours_y, ours_state = ours(x[:, start:end], ours_state)
            torch.testing.assert_close(ours_y, expected, atol=1e-4, rtol=1e-4)
    shift, num, den, top = ours_state
    torch.testing.assert_close(shift, state[1][..., 0])
    torch.testing.assert_close(top, state[4][..., 0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(num, state[2][..., 0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(den, state[3][..., 0], atol=1e-4, rtol=1e-4)


def test_channel_mixing_matches_hugging_face_with_carried_state() -> None:
    _, feed_forward = hugging_face_modules()
    torch.manual_seed(0)
    ours = randomised(ChannelMix(WIDTH))
    copy_into(ours, feed_forward)
    x = inputs(2, SPLITS[-1][1])
    state, ours_state = hugging_face_state(2), None
    with torch.no_grad():
        for start, end in SPLITS:
            expected, state = feed_forward(x[:, start:end], state=state)
            ours_y, ours_state = ours(x[:, start:end], ours_state)
            torch.testing.assert_close(ours_y, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours_state, state[0][..., 0])


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_blocked_time_mixing_matches_steps_at_odd_chunks(chunk: int) -> None:
    torch.manual_seed(0)
    mixer = TimeMix(WIDTH, chunk=chunk)
    x = inputs(2, 29)
    with torch.no_grad():
        steps, step_state = run_in_chunks(mixer, x, [1] * 29)
        for sizes in ([29], [10, 1, 2, 16], [17, 12]):
            y, state = run_in_chunks(mixer, x, sizes)
            torch.testing.assert_close(y, steps, atol=1e-5, rtol=1e-5)
            for got, expected in zip(state, step_state):
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert sum(part[0].numel() for part in step_state) == mixer.state_size(29) == 4 * WIDTH


def test_wkv_stays_exact_with_extreme_keys_and_decays() -> None:
    """Keys of ±60 and decays from e^-5 to e^5 overflow a naive exp; the stable forms agree."""
    generator = torch.Generator().manual_seed(5)
    batch, blocks, size = 2, 3, 8
    k = 60 * (2 * torch.rand(batch, blocks * size, WIDTH, generator=generator) - 1)
    v = torch.randn(batch, blocks * size, WIDTH, generator=generator)
    w = torch.exp(torch.linspace(-5, 5, WIDTH))
    u = torch.linspace(-3, 3, WIDTH)
    zeros = torch.zeros(batch, WIDTH)
    fresh = (zeros, zeros, torch.full((batch, WIDTH), -1e38))
    state, steps = fresh, []
    for t in range(k.shape[1]):
        y, state = wkv_step(w, u, k[:, t], v[:, t], state)
        steps.append(y)
    steps = torch.stack(steps, 1)
    shape = (batch, blocks, size, WIDTH)
    blocked, blocked_state = wkv_blocks(w, u, k.view(shape), v.view(shape), fresh)
    assert torch.isfinite(blocked).all()
    torch.testing.assert_close(blocked.reshape(steps.shape), steps, atol=1e-5, rtol=1e-5)
    for got, expected in zip(blocked_state, state):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_channel_mix_is_the_default_feed_forward() -> None:
    model = models.build("rwkv", 7, WIDTH, 2, mlp_ratio=2)
    assert FEEDFORWARDS["rwkv_channel_mix"] is ChannelMix
    assert all(isinstance(block.feedforward, ChannelMix) for block in model.blocks)
    assert model.blocks[0].feedforward.key.out_features == 2 * WIDTH
    assert model.state_size(10) == 2 * (4 * WIDTH + WIDTH)


def test_bad_chunk_fails_with_one_line() -> None:
    with pytest.raises(SepbenchError, match="chunk") as error:
        models.build("rwkv", 7, WIDTH, 1, chunk=0)
    assert "\n" not in str(error.value)
