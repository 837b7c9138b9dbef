"""The fast clustered kernels (hand-written backward passes, sparse top-K slots) against their
plain-autograd references written from the thesis' equations: values and gradients."""

from __future__ import annotations

import pytest
import torch

from asr_zoo.nn.attention.clustered import clustered_attention, clustered_attention_reference
from asr_zoo.nn.attention.hashing import cluster_queries
from asr_zoo.nn.attention.iclustered import (
    improved_clustered_attention, improved_clustered_attention_reference,
)
from asr_zoo.nn.attention.iclustered_kernels import top_keys


def _inputs(B=2, H=2, N=70, E=8, lengths=(70, 43), seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v, grad = (torch.randn(B, H, N, E, generator=g, dtype=torch.float64) for _ in range(4))
    pad = torch.arange(N)[None, :] >= torch.tensor(lengths)[:, None]
    return [t.requires_grad_() for t in (q, k, v)], grad, pad


def _compare(fast, ref, q, k, v, grad, pad):
    valid = ~pad[:, None, :, None]
    assert torch.allclose(fast * valid, ref * valid, atol=1e-12, rtol=0)
    for a, b in zip(torch.autograd.grad(fast, (q, k, v), grad * valid),
                    torch.autograd.grad(ref, (q, k, v), grad * valid)):
        assert torch.allclose(a, b, atol=1e-11, rtol=0), (a - b).abs().max()


@pytest.mark.parametrize("clusters,bits,iterations", [(5, 63, 10), (9, 12, 3), (30, 63, 10)])
def test_clustered_attention_equals_reference(clusters, bits, iterations):
    (q, k, v), grad, pad = _inputs()
    fast = clustered_attention(q, k, v, pad, clusters, bits, iterations, torch.Generator().manual_seed(4))
    assign = cluster_queries(q, pad, clusters, bits, iterations, torch.Generator().manual_seed(4))
    _compare(fast, clustered_attention_reference(q, k, v, pad, assign, clusters), q, k, v, grad, pad)


@pytest.mark.parametrize("clusters,topk", [(5, 6), (9, 1), (3, 40), (30, 70)])
def test_improved_clustered_attention_equals_reference(clusters, topk):
    (q, k, v), grad, pad = _inputs()
    fast = improved_clustered_attention(q, k, v, pad, clusters, topk=topk,
                                        generator=torch.Generator().manual_seed(2))
    assign = cluster_queries(q, pad, clusters, generator=torch.Generator().manual_seed(2))
    ref = improved_clustered_attention_reference(q, k, v, pad, assign, clusters, topk)
    _compare(fast, ref, q, k, v, grad, pad)


def test_references_without_padding():
    (q, k, v), grad, _ = _inputs(lengths=(70, 70))
    assign = cluster_queries(q, None, 6, generator=torch.Generator().manual_seed(0))
    none = torch.zeros(2, 70, dtype=torch.bool)
    gen = torch.Generator
    _compare(clustered_attention(q, k, v, None, 6, generator=gen().manual_seed(0)),
             clustered_attention_reference(q, k, v, None, assign, 6), q, k, v, grad, none)
    _compare(improved_clustered_attention(q, k, v, None, 6, topk=8, generator=gen().manual_seed(0)),
             improved_clustered_attention_reference(q, k, v, None, assign, 6, 8), q, k, v, grad, none)


@pytest.mark.parametrize("N,K", [(4096, 32), (1027, 32), (300, 5), (90, 1), (70, 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_top_keys_equals_topk(N, K, dtype):
    """The block-filtered top-K (long rows) and its topk fallback (short rows): the K largest
    entries, largest first, on softmax rows with padding zeros and on rows with a NaN."""
    g = torch.Generator().manual_seed(N)
    scores = torch.randn(3, 5, N, generator=g, dtype=dtype) * 3
    scores[1, :, N // 2:] = float("-inf")  # padding keys: weight 0
    a = torch.softmax(scores, -1)
    values, idx = top_keys(a, K)
    ref_values, ref_idx = a.topk(K, -1)
    assert torch.equal(values.sort(-1, descending=True).values, ref_values)
    assert torch.equal(a.gather(-1, idx), values)
    assert torch.equal(idx.sort(-1).values, ref_idx.sort(-1).values)  # no ties in this data
    a[2, 3, 7] = float("nan")  # a NaN row falls back to topk (NaN first)
    assert torch.equal(top_keys(a, K)[1][2, 3].sort().values, a[2, 3].topk(K).indices.sort().values)


def test_improved_clustered_attention_equals_reference_long():
    """Long enough for the block-filtered top-K (600 keys: blocks of 16) and several query slots
    per cluster, with padding."""
    (q, k, v), grad, pad = _inputs(B=2, H=2, N=600, E=8, lengths=(600, 433), seed=3)
    fast = improved_clustered_attention(q, k, v, pad, 4, topk=8, generator=torch.Generator().manual_seed(1))
    assign = cluster_queries(q, pad, 4, generator=torch.Generator().manual_seed(1))
    _compare(fast, improved_clustered_attention_reference(q, k, v, pad, assign, 4, 8), q, k, v, grad, pad)
