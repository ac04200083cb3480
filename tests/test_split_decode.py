"""Split decode steps (kernels.graphs, `split` > 1) on the CPU: the micro-batches' caches are views sharing
the position, a step that does not advance leaves it, and decoding the micro-batches one after another then
advancing once computes what the whole-batch step computes. (The streams and the graph: tests/gpu.)"""

import pytest
import torch
from _models import VOCAB, tiny_model

from ttt_infer.kernels.graphs import SPLIT_ENV, CUDAGraphDecoder, default_split, split_ranges


def test_rows_are_views_sharing_the_position():
    model = tiny_model("mlp", "mamba")
    cache = model.new_cache(5)
    part = cache.rows(2, 5)
    assert part.batch_size == 3 and part.position is cache.position
    for whole, view in zip(cache.tensors()[1:], part.tensors()[1:], strict=True):
        assert view.is_contiguous() and view.data_ptr() == whole[2:].data_ptr() and view.shape[0] == 3
    part.ttt[0].W2.fill_(7.0)
    assert (cache.ttt[0].W2[2:] == 7.0).all() and not (cache.ttt[0].W2[:2] == 7.0).any()
    part.advance(3)
    assert int(cache.position) == 3
    for lo, hi in ((0, 0), (3, 2), (-1, 2), (0, 6)):
        with pytest.raises(ValueError, match="not a non-empty range"):
            cache.rows(lo, hi)


def test_decode_step_without_advance_leaves_the_position():
    model = tiny_model("linear", "mamba")
    cache = model.new_cache(2)
    model(torch.randint(0, VOCAB, (2, 5)), cache)
    model.decode_step(torch.tensor([1, 2]), cache, advance=False)
    assert cache.seqlen == 5 and int(cache.position) == 5
    with pytest.raises(ValueError, match="cache holds 2 sequences"):
        model.decode_step(torch.tensor([1, 2, 3]), cache, advance=False)


@pytest.mark.parametrize("backbone", ["mamba", "transformer"])
@pytest.mark.parametrize("layer_type", ["linear", "mlp"])
def test_micro_batches_decode_as_the_whole_batch(layer_type, backbone):
    """5 sequences as micro-batches of 2 and 3, 24 steps after a 13-token prompt (a mini-batch end inside)."""
    model = tiny_model(layer_type, backbone)
    ids = torch.randint(0, VOCAB, (5, 13 + 24), generator=torch.Generator().manual_seed(5))
    whole, split = model.new_cache(5), model.new_cache(5)
    model(ids[:, :13], whole)
    model(ids[:, :13], split)
    parts = [split.rows(0, 2), split.rows(2, 5)]
    for t in range(13, 37):
        want = model.decode_step(ids[:, t], whole)
        got = []
        for part, (lo, hi) in zip(parts, ((0, 2), (2, 5)), strict=True):
            part.seqlen = split.seqlen
            got.append(model.decode_step(ids[lo:hi, t], part, advance=False))
        split.advance(1)
        torch.testing.assert_close(torch.cat(got), want, rtol=1e-12, atol=1e-12)
    assert split.seqlen == whole.seqlen == 37 and int(split.position) == 37
    for a, b in zip(whole.tensors(), split.tensors(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_default_split_reads_the_environment(monkeypatch):
    monkeypatch.delenv(SPLIT_ENV, raising=False)
    assert default_split(512) == 1
    monkeypatch.setenv(SPLIT_ENV, "2")
    assert default_split(512) == 2 and default_split(1) == 1
    for bad in ("0", "-1", "two", ""):
        monkeypatch.setenv(SPLIT_ENV, bad)
        with pytest.raises(ValueError, match=SPLIT_ENV):
            default_split(512)


def test_split_ranges_are_even_and_cover_the_batch():
    assert split_ranges(512, 1) == [(0, 512)]
    assert split_ranges(512, 2) == [(0, 256), (256, 512)]
    assert split_ranges(5, 3) == [(0, 2), (2, 4), (4, 5)]
    for batch, n in ((5, 0), (5, 6), (5, 2.0)):
        with pytest.raises(ValueError, match="split must be an int"):
            split_ranges(batch, n)


def test_decoder_refuses_a_reference_model():
    model = tiny_model("linear", "mamba")
    with pytest.raises(ValueError, match="backend='kernels'"):
        CUDAGraphDecoder(model, model.new_cache(2), split=2)
