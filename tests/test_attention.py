"""The attention zoo against direct evaluations of its equations, plus invariants shared by all types."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from asr_zoo.nn.attention import ATTENTION, build_attention, hashing
from asr_zoo.nn.attention.clustered import clustered_attention, clustered_attention_reference
from asr_zoo.nn.attention.clustered_kernels import centroid_attention
from asr_zoo.nn.attention.hashing import cluster_queries
from asr_zoo.nn.attention.iclustered import (
    improved_clustered_attention, improved_clustered_attention_reference, topk_attention,
)
from asr_zoo.nn.attention.linear import LinearAttention, linear_attention, linear_attention_step
from asr_zoo.nn.attention.pooled import pooled_attention
from asr_zoo.nn.attention.softmax import softmax_attention

CONF = Path(__file__).resolve().parents[1] / "conf" / "attention"
TYPES = ATTENTION.names()
SMALL = {"clusters": 6, "topk": 4}  # small enough that clustering really approximates at N ~ 30


def _qkv(B=2, H=2, N=23, E=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, N, E, generator=g, dtype=dtype) for _ in range(3)]


def _pad_mask(lengths, N):
    return torch.arange(N)[None, :] >= torch.tensor(lengths)[:, None]  # (B, N), True = padding


def _module(name, d_model=16, heads=2, **over):
    cfg_cls = ATTENTION.get(name).config
    params = {f.name for f in fields(cfg_cls)}
    cfg = cfg_cls(**{k: v for k, v in {**SMALL, **over}.items() if k in params})
    return build_attention(cfg, d_model, heads).eval()


def _valid_close(a, b, pad_mask, atol):
    valid = ~pad_mask[:, None, :, None]
    assert torch.allclose(a * valid, b * valid, atol=atol, rtol=0), (a - b).mul(valid).abs().max()


# ---------------------------------------------------------------- linear


def _phi(x):
    return torch.nn.functional.elu(x) + 1


def _direct_linear(q, k, v, pad_mask, causal, eps=1e-6):
    sim = _phi(q) @ _phi(k).transpose(-1, -2)  # (B, H, N, N), explicit kernel matrix
    sim = sim.masked_fill(pad_mask[:, None, None, :], 0.0)
    if causal:
        sim = sim.tril()
    return (sim @ v) / (sim.sum(-1, keepdim=True) + eps)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("N,chunk", [(23, 8), (23, 64), (64, 16)])
def test_linear_matches_direct_formula(causal, N, chunk):
    q, k, v = _qkv(N=N)
    pad = _pad_mask([N, N - 7], N)
    out = linear_attention(q, k, v, pad, causal=causal, chunk_size=chunk)
    ref = _direct_linear(q, k, v, pad, causal)
    assert out.dtype == v.dtype
    _valid_close(out, ref, pad, atol=1e-12)


def test_linear_step_equals_causal():
    q, k, v = _qkv(N=19)
    ref = linear_attention(q, k, v, causal=True)
    state, outs = None, []
    for i in range(q.shape[2]):
        y, state = linear_attention_step(q[:, :, i], k[:, :, i], v[:, :, i], state)
        outs.append(y)
    assert torch.allclose(torch.stack(outs, 2), ref, atol=1e-12)


def test_linear_module_step_equals_forward():
    torch.manual_seed(0)
    att = LinearAttention(d_model=16, num_heads=4, causal=True).eval()
    x = torch.randn(3, 11, 16)
    full = att(x)
    state, outs = None, []
    for i in range(x.shape[1]):
        y, state = att.step(x[:, i], state)
        outs.append(y)
    assert torch.allclose(torch.stack(outs, 1), full, atol=1e-5)


# ---------------------------------------------------------------- exactness limits


def test_clustered_one_cluster_per_query_is_softmax():
    q, k, v = _qkv(N=23)
    pad = _pad_mask([23, 15], 23)
    out = clustered_attention(q, k, v, pad, clusters=23, generator=torch.Generator().manual_seed(0))
    _valid_close(out, softmax_attention(q, k, v, pad), pad, atol=1e-10)


def test_iclustered_with_all_keys_is_softmax():
    q, k, v = _qkv(N=100)
    pad = _pad_mask([100, 77], 100)  # 2 clusters: each spans several query slots
    out = improved_clustered_attention(q, k, v, pad, clusters=2, topk=100,
                                       generator=torch.Generator().manual_seed(0))
    _valid_close(out, softmax_attention(q, k, v, pad), pad, atol=1e-12)


@pytest.mark.parametrize("clusters,topk", [(3, 5), (7, 1), (2, 20)])
def test_iclustered_matches_per_query_definition(clusters, topk):
    q, k, v = _qkv(N=90)
    lengths, E = [90, 61], q.shape[-1]
    pad = _pad_mask(lengths, 90)
    out = improved_clustered_attention(q, k, v, pad, clusters=clusters, topk=topk,
                                       generator=torch.Generator().manual_seed(5))
    assign = cluster_queries(q, pad, clusters, generator=torch.Generator().manual_seed(5))
    for b, L in enumerate(lengths):
        for h in range(q.shape[1]):
            qs, ks, vs, a = q[b, h, :L], k[b, h, :L], v[b, h, :L], assign[b, h, :L]
            for i in range(L):  # eq. 5.32, one query at a time
                centroid = qs[a == a[i]].mean(0)
                a_c = torch.softmax(ks @ centroid / E**0.5, -1)  # (L,)
                top = a_c.topk(min(topk, L)).indices
                row = a_c.clone()
                row[top] = a_c[top].sum() * torch.softmax(ks[top] @ qs[i] / E**0.5, -1)
                assert torch.allclose(out[b, h, i], row @ vs, atol=1e-10)


def _seeded(fn, seed=0):
    """fn with the global RNG reset before every call: the same dropout masks for gradcheck."""
    def call(*args):
        torch.manual_seed(seed)
        return fn(*args)
    return call


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("K", [4, 0])
def test_centroid_attention_backward_is_gradcheck_exact(K, dropout):
    G, C, N, E = 2, 3, 11, 4
    g = torch.Generator().manual_seed(0)
    q_c, k, v = (torch.randn(G, n, E, generator=g, dtype=torch.float64, requires_grad=True)
                 for n in (C, N, N))
    key_pad = _pad_mask([11, 8], N)

    def f(q_c, k, v):
        rest, mass, _ = centroid_attention(q_c, k, v, key_pad, K, dropout)
        return rest, mass

    assert torch.autograd.gradcheck(_seeded(f), (q_c, k, v))
    rest, mass, top = centroid_attention(q_c, k, v, key_pad, K)  # against the definition
    a = torch.softmax((q_c @ k.transpose(1, 2) / E**0.5).masked_fill(key_pad[:, None], -torch.inf), -1)
    on_top = torch.zeros_like(a, dtype=torch.bool).scatter_(-1, top, True)
    assert torch.equal(top.sort(-1).values, a.topk(K, -1).indices.sort(-1).values)
    assert torch.allclose(mass, (a * on_top).sum(-1), atol=1e-12)
    assert torch.allclose(rest, (a * ~on_top) @ v, atol=1e-12)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_topk_attention_backward_is_gradcheck_exact(dropout):
    G, C, N, E, K = 2, 3, 13, 4, 5
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(G, N, E, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    mass = torch.rand(G, C, generator=g, dtype=torch.float64).requires_grad_()
    rest = torch.randn(G, C, E, generator=g, dtype=torch.float64, requires_grad=True)
    assign = torch.randint(C, (G, N), generator=g)
    assign[1, 9:] = C  # padding queries: no cluster
    top_idx = torch.stack([torch.randperm(N, generator=g)[:K] for _ in range(G * C)]).view(G, C, K)
    key_valid = ~_pad_mask([13, 9], N)

    def f(q, k, v, mass, rest):
        return topk_attention(q, k, v, assign, top_idx, key_valid, mass, rest, dropout)

    assert torch.autograd.gradcheck(_seeded(f), (q, k, v, mass, rest))
    out = f(q, k, v, mass, rest)
    assert (out[1, 9:] == 0).all()
    for b in range(G):  # without dropout: against one query at a time
        for i in range(9 if b else N):
            j, top = assign[b, i], top_idx[b, assign[b, i]]
            w = torch.softmax((k[b, top] @ q[b, i] / E**0.5).masked_fill(~key_valid[b, top], -torch.inf), -1)
            assert dropout or torch.allclose(out[b, i], mass[b, j] * w @ v[b, top] + rest[b, j], atol=1e-12)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_iclustered_gradients_equal_the_composition_of_its_parts(dropout):
    q, k, v = (t.requires_grad_() for t in _qkv(N=40, E=4))
    B, H, N, E = q.shape
    pad, C, K = _pad_mask([40, 29], N), 5, 6
    grad = torch.randn(B, H, N, E, dtype=q.dtype, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)  # same dropout masks in both
    out = improved_clustered_attention(q, k, v, pad, clusters=C, topk=K, dropout=dropout,
                                       generator=torch.Generator().manual_seed(1))
    fused = torch.autograd.grad(out, (q, k, v), grad)

    torch.manual_seed(3)
    assign = cluster_queries(q, pad, C, generator=torch.Generator().manual_seed(1)).view(B * H, N)
    qf, kf, vf = (t.reshape(B * H, N, E) for t in (q, k, v))
    key_pad = pad[:, None].expand(B, H, N).reshape(B * H, N)
    one_hot = torch.nn.functional.one_hot(assign, C + 1)[..., :C].to(q.dtype)  # (G, N, C)
    q_c = (one_hot.transpose(1, 2) @ qf) / one_hot.sum(1).clamp(min=1).unsqueeze(-1)  # means
    rest, mass, top_idx = centroid_attention(q_c, kf, vf, key_pad, K, dropout)
    ref = topk_attention(qf, kf, vf, assign, top_idx, ~key_pad, mass, rest, dropout)
    assert torch.allclose(out, ref.view(B, H, N, E), atol=1e-12)
    for a, b in zip(fused, torch.autograd.grad(ref.view(B, H, N, E), (q, k, v), grad)):
        assert torch.allclose(a, b, atol=1e-10)


def test_pooled_stride_one_is_softmax():
    q, k, v = _qkv()
    pad = _pad_mask([23, 10], 23)
    _valid_close(pooled_attention(q, k, v, pad, 1, 1), softmax_attention(q, k, v, pad), pad, 1e-12)


@pytest.mark.parametrize("sq,sk", [(2, 3), (3, 2), (4, 1)])
def test_pooled_matches_windowed_loops(sq, sk):
    q, k, v = _qkv(B=2, H=1, N=13, E=4)
    lengths = [13, 8]
    out = pooled_attention(q, k, v, _pad_mask(lengths, 13), sq, sk)
    for b, L in enumerate(lengths):  # windows aligned to frame 0, averaging valid frames only
        qp = torch.stack([q[b, 0, i:min(i + sq, L)].mean(0) for i in range(0, L, sq)])
        kp = torch.stack([k[b, 0, i:min(i + sk, L)].mean(0) for i in range(0, L, sk)])
        vp = torch.stack([v[b, 0, i:min(i + sk, L)].mean(0) for i in range(0, L, sk)])
        yp = torch.softmax(qp @ kp.T / 2.0, -1) @ vp  # E = 4: 1/sqrt(E) = 1/2
        ref = yp.repeat_interleave(sq, 0)[:L]
        assert torch.allclose(out[b, 0, :L], ref, atol=1e-12)


# ---------------------------------------------------------------- clustering


def _reference_kmeans(q, planes, C, iterations):
    """Plain per-sequence Lloyd loop on 0/1 bit arrays, numpy Hamming distances."""
    E = q.shape[-1]
    bits = (q @ planes[:, :E].T > planes[:, E]).numpy()  # (L, bits)
    L = len(bits)
    cent = bits[[i * L // C for i in range(C)]].copy()
    assign, reseeded = None, False
    for it in range(iterations):
        dist = (bits[:, None, :] != cent[None, :, :]).sum(-1)  # (L, C)
        new = dist.argmin(1)  # ties: lowest index
        if not reseeded and assign is not None and (new == assign).all():
            break
        assign = new
        if it == iterations - 1:
            break
        for c in range(C):
            members = bits[assign == c]
            if len(members):
                ones, zeros = members.sum(0), (1 - members).sum(0)
                cent[c] = np.where(ones > zeros, 1, np.where(ones < zeros, 0, cent[c]))
        empty = [c for c in range(C) if not (assign == c).any()]
        far = sorted(range(L), key=lambda i: (-dist[i].min(), i))  # farthest first
        for j, c in enumerate(empty):
            cent[c] = bits[far[j]]
        reseeded = bool(empty)
    return assign


@pytest.mark.parametrize("integer", [True, False], ids=["int8-keys", "float32-keys"])
@pytest.mark.parametrize("bits,iterations", [(63, 10), (12, 3), (5, 1)])
def test_cluster_queries_matches_reference_kmeans(bits, iterations, integer, monkeypatch):
    monkeypatch.setattr(hashing, "NearestCentroid", functools.partial(hashing.NearestCentroid, integer=integer))
    q, _, _ = _qkv(B=2, H=2, N=50, E=6, dtype=torch.float32)
    lengths, C = [50, 31], 7
    assign = cluster_queries(q, _pad_mask(lengths, 50), C, bits, iterations,
                             torch.Generator().manual_seed(3))
    planes = torch.randn(bits, 7, generator=torch.Generator().manual_seed(3))
    for b, L in enumerate(lengths):
        assert (assign[b, :, L:] == C).all()  # padding joins no cluster
        for h in range(2):
            ref = _reference_kmeans(q[b, h, :L], planes, C, iterations)
            assert assign[b, h, :L].tolist() == ref.tolist()


@pytest.mark.parametrize("integer", [True, False], ids=["int8-keys", "float32-keys"])
@pytest.mark.parametrize("bits,C", [(3, 7), (8, 100), (63, 100), (20, 200), (5, 1)])
def test_nearest_centroid_is_hamming_argmin_with_lowest_index_ties(bits, C, integer):
    g = torch.Generator().manual_seed(C + bits)
    G, N = 3, 300
    codes = torch.randint(2, (G, N, bits), generator=g).float() * 2 - 1
    T = hashing.tie_columns(C)
    nearest = hashing.NearestCentroid(torch.cat([codes, torch.ones(G, N, T + 3)], -1), bits, C,
                                      integer=integer)
    cent = torch.randint(2, (G, C, bits), generator=g).float() * 2 - 1
    for step in range(5):  # later steps change centroids: only what changed is recomputed
        if step % 2:  # whole centroids negated (int8: their rows; float32: the full matmul)
            changed = torch.rand(G, C, generator=g) < 0.3
            cent = torch.where(changed[..., None], -cent, cent)
        elif step:  # a few bits flipped (float32: keys updated by the flipped bits' code rows)
            cent = torch.where(torch.rand(G, C, bits, generator=g) < 0.05, -cent, cent)
        assign = nearest(cent)
        distance = (codes[:, :, None, :] != cent[:, None, :, :]).sum(-1)  # (G, N, C)
        assert torch.equal(assign, distance.argmin(-1))  # argmin returns the first minimum
        assert torch.equal(nearest.best_dot(), bits - 2 * distance.amin(-1))
        assert (distance == distance.amin(-1, keepdim=True)).sum(-1).max() > 1 or C == 1  # ties


@pytest.mark.parametrize("bits", [63, 8])
def test_one_cluster_with_padding_first(bits):
    q, _, _ = _qkv(B=2, H=2, N=10, dtype=torch.float32)
    assign = cluster_queries(q, _pad_mask([6, 10], 10), clusters=1, bits=bits)
    assert (assign[0, :, :6] == 0).all() and (assign[0, :, 6:] == 1).all() and (assign[1] == 0).all()


def test_int8_keys_refuse_too_many_clusters():
    with pytest.raises(ValueError, match="clusters <= 254"):
        hashing.NearestCentroid(torch.ones(1, 4, 6), 3, 300, integer=True)


def test_cluster_queries_short_sequences_get_one_cluster_per_frame():
    q, _, _ = _qkv(B=2, H=1, N=12, dtype=torch.float32)
    assign = cluster_queries(q, _pad_mask([5, 12], 12), clusters=8)
    assert assign[0, 0].tolist() == [0, 1, 2, 3, 4] + [8] * 7
    assert assign[1, 0].max() < 8


def _clustered_data(N=256, centres=8, E=32, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(1, 2, centres, E, generator=g)
    idx = torch.randint(centres, (N,), generator=g)
    q = c[:, :, idx] + noise * torch.randn(1, 2, N, E, generator=g)
    k, v = (torch.randn(1, 2, N, E, generator=g) for _ in range(2))
    return q, k, v


def test_clustered_approximation_error_on_clustered_queries():
    q, k, v = _clustered_data()
    ref = softmax_attention(q, k, v)
    err = {}
    for name, fn in [("clustered", clustered_attention), ("iclustered", improved_clustered_attention)]:
        out = fn(q, k, v, None, clusters=32, generator=torch.Generator().manual_seed(0))
        err[name] = ((out - ref).norm() / ref.norm()).item()
    assert err["clustered"] < 0.1 and err["iclustered"] < 0.6 * err["clustered"], err


# ---------------------------------------------------------------- every registered type


@pytest.mark.parametrize("name", TYPES)
def test_padding_does_not_change_valid_outputs(name):
    torch.manual_seed(0)
    att = _module(name)
    x = torch.randn(2, 30, 16)
    pad = _pad_mask([30, 21], 30)
    y = att(x, pad)
    x_long = torch.cat([x, torch.randn(2, 9, 16)], 1)  # append 9 frames of padding
    y_long = att(x_long, _pad_mask([30, 21], 39))
    for b, L in enumerate([30, 21]):
        assert torch.allclose(y[b, :L], y_long[b, :L], atol=1e-5)


@pytest.mark.parametrize("name", TYPES)
def test_gradients_reach_q_k_v(name):
    att = _module(name)
    q, k, v = (t.float().requires_grad_() for t in _qkv(N=30, E=8))
    pad = _pad_mask([30, 20], 30)
    out = att.attend(q, k, v, pad)
    (out * ~pad[:, None, :, None]).square().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all() and t.grad[:, :, :20].abs().sum() > 0


@pytest.mark.parametrize("name", TYPES)
def test_eval_runs_repeat_exactly(name):
    att = _module(name)
    x = torch.randn(2, 30, 16)
    pad = _pad_mask([30, 17], 30)
    assert torch.equal(att(x, pad), att(x, pad))


@pytest.mark.parametrize("name", TYPES)
def test_short_utterances_fewer_frames_than_clusters(name):
    att = _module(name, clusters=10)
    q, k, v = (t.float() for t in _qkv(N=25, E=8))
    pad = _pad_mask([25, 4], 25)
    out = att.attend(q, k, v, pad)
    assert torch.isfinite(out).all()
    if name in ("clustered", "iclustered"):  # 4 frames <= 10 clusters: exact
        ref = softmax_attention(q, k, v, pad)
        assert torch.allclose(out[1, :, :4], ref[1, :, :4], atol=1e-5)


@pytest.mark.parametrize("name", ["clustered", "iclustered"])
def test_short_batches_skip_clustering_with_the_same_result(name, monkeypatch):
    """Longest utterance <= clusters: exact softmax without K-means, equal to the clustered path."""
    q, k, v = (t.float() for t in _qkv(N=12, E=8))
    pad = _pad_mask([12, 7], 12)
    clustering = _module(name, clusters=12, short_exact=False).attend(q, k, v, pad)
    fast = _module(name, clusters=12)
    module = sys.modules[type(fast).__module__]
    monkeypatch.setattr(module, "cluster_queries", lambda *a, **kw: pytest.fail("clustered a short batch"))
    _valid_close(fast.attend(q, k, v, pad), clustering, pad, atol=1e-5)
    q, k, v = (t.float() for t in _qkv(N=20, E=8))  # 20 frames > 12 clusters: clusters again
    with pytest.raises(pytest.fail.Exception, match="clustered a short batch"):
        fast.attend(q, k, v, _pad_mask([20, 7], 20))


@pytest.mark.parametrize("name", TYPES)
def test_causal_only_where_supported(name):
    cls = ATTENTION.get(name).obj
    cfg = ATTENTION.get(name).config(name=name)
    if cls.supports_causal:
        assert build_attention(cfg, 16, 2, causal=True).causal
    else:
        with pytest.raises(ValueError, match="causal"):
            build_attention(cfg, 16, 2, causal=True)


@pytest.mark.parametrize("name", TYPES)
def test_runs_under_bf16_autocast(name):
    att = _module(name)
    x = torch.randn(2, 30, 16)
    pad = _pad_mask([30, 17], 30)
    ref = att(x, pad)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = att(x, pad)
    assert torch.isfinite(y).all()
    assert (y.float() - ref)[0].abs().max() < 0.1 * ref[0].abs().max() + 0.05


@pytest.mark.parametrize("name", TYPES)
def test_conf_yaml_matches_dataclass_and_builds(name):
    conf = OmegaConf.load(CONF / f"{name}.yaml")
    cfg_cls = ATTENTION.get(name).config
    assert conf.name == name
    assert set(conf) == {f.name for f in fields(cfg_cls)}
    defaults = cfg_cls()
    assert all(conf[f.name] == getattr(defaults, f.name) for f in fields(cfg_cls))
    merged = OmegaConf.merge(OmegaConf.structured(cfg_cls), conf)
    assert build_attention(merged, 16, 2)(torch.randn(1, 5, 16)).shape == (1, 5, 16)


def _saved_bytes(name, N):
    att = _module(name, d_model=32, heads=2, clusters=8, topk=4).train()
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    q, k, v = (torch.randn(1, 2, N, 16, requires_grad=True) for _ in range(3))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        att.attend(q, k, v, None)
    return total


@pytest.mark.parametrize("name", [t for t in TYPES if t not in ("softmax", "pooled")])
def test_memory_for_backward_is_linear_in_length(name):
    assert _saved_bytes(name, 1024) < 2.3 * _saved_bytes(name, 512)


def test_attention_benchmark_writes_every_record(tmp_path):
    from asr_zoo.bench.attention import main

    assert main(["--out", str(tmp_path), "--n", "64", "160", "--repeats", "1", "--threads", "1"]) == 0
    records = [json.loads(line) for line in (tmp_path / "attention.jsonl").read_text().splitlines()]
    assert {(r["type"], r["n"], r["mode"]) for r in records} == {
        (t, n, m) for t in TYPES for n in (64, 160) for m in ("fwd", "fwdbwd")}
    assert all(r["median_ms"] > 0 and r["peak_mb"] >= 0 and r["vs_softmax"] > 0 for r in records)
    errors = {r["type"]: r["rel_error"] for r in records if r["n"] == 160}
    assert errors["softmax"] == 0 and 0 < errors["clustered"] < 0.5 and errors["iclustered"] < errors["clustered"]
    table = (tmp_path / "attention.md").read_text().splitlines()
    assert table[2].startswith("| softmax | 64 |")  # softmax first: the others are relative to it
    assert (tmp_path / "attention.png").stat().st_size > 0
