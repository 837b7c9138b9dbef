"""Seq2seq decoder cache and searches: cached == recomputed, beam vs greedy vs exhaustive search,
padding invariance, CTC prefix scores against brute-force path enumeration."""

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from asr_zoo.decoding.seq2seq import (CTCPrefixScorer, beam_search, greedy_search, max_lengths,
                                      sequence_log_prob)
from asr_zoo.nn.decoder import TransformerDecoder

EOS = 1
ATTENTION = ["softmax", "linear"]


def make_decoder(attention="softmax", vocab=12, seed=0, eos_bias=-2.0, tie=False):
    """A random float64 decoder whose <eos> is made less likely so hypotheses have some length."""
    torch.manual_seed(seed)
    dec = TransformerDecoder(vocab, d_model=16, num_layers=2, num_heads=2, ffn_dim=32, dropout=0.0,
                             attention=attention, tie_embedding=tie).double().eval()
    with torch.no_grad():
        dec.output.bias[EOS] += eos_bias
    return dec


def make_memory(lens=(9, 4, 6), seed=1):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lens)
    return torch.randn(len(lens), int(lens.max()), 16, generator=g, dtype=torch.float64), lens


@pytest.mark.parametrize("attention", ATTENTION)
def test_cached_steps_equal_full_forward(attention):
    dec = make_decoder(attention)
    memory, memory_lens = make_memory()
    tokens = torch.randint(2, 12, (3, 6))
    tokens[:, 0] = EOS
    full = dec(tokens, torch.full((3,), 6), memory, memory_lens)  # (B, U, V)
    state = dec.init_state(memory, memory_lens)
    steps = []
    for u in range(6):
        logits, state = dec.step(tokens[:, u], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=0, atol=1e-10)

    # reordering the cache of beams of one utterance == recomputing the reordered prefixes
    beams_memory, beams_lens = memory[:1].expand(3, -1, -1), memory_lens[:1].expand(3)
    order = torch.tensor([2, 0, 0])
    state = dec.init_state(beams_memory, beams_lens)
    for u in range(3):
        _, state = dec.step(tokens[:, u], state)
    logits, _ = dec.step(tokens[order, 3], state.select(order))
    want = dec(tokens[order, :4], torch.full((3,), 4), beams_memory, beams_lens)[:, -1]
    torch.testing.assert_close(logits, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("attention", ATTENTION)
def test_decoding_with_cache_equals_full_recomputation(attention):
    dec = make_decoder(attention)
    memory, memory_lens = make_memory()
    for search in (lambda **kw: greedy_search(dec, memory, memory_lens, 2.0, **kw),
                   lambda **kw: beam_search(dec, memory, memory_lens, 3, 1.0, 2.0, **kw)):
        hyps, scores, steps = search(use_cache=True)
        hyps_ref, scores_ref, steps_ref = search(use_cache=False)
        assert hyps == hyps_ref and steps == steps_ref
        torch.testing.assert_close(scores, scores_ref)


@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("seed", range(3))
def test_beam_width_one_equals_greedy(attention, seed):
    dec = make_decoder(attention, seed=seed)
    memory, memory_lens = make_memory(seed=seed)
    greedy = greedy_search(dec, memory, memory_lens, 2.0)
    beam = beam_search(dec, memory, memory_lens, 1, 1.0, 2.0)
    assert beam[0] == greedy[0] and beam[2] == greedy[2]
    torch.testing.assert_close(beam[1], greedy[1])


@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("seed", range(4))
def test_beam_never_scores_below_greedy_and_scores_are_model_log_probs(attention, seed):
    dec = make_decoder(attention, seed=seed, eos_bias=-1.0)
    memory, memory_lens = make_memory(lens=(7, 3, 5, 8), seed=seed)
    hyps, greedy_scores, _ = greedy_search(dec, memory, memory_lens, 1.5)
    torch.testing.assert_close(sequence_log_prob(dec, memory, memory_lens, hyps), greedy_scores)
    for k in (2, 4, 8):
        hyps, scores, _ = beam_search(dec, memory, memory_lens, k, 0.0, 1.5)
        assert (scores >= greedy_scores - 1e-5).all(), (k, scores, greedy_scores)
        torch.testing.assert_close(sequence_log_prob(dec, memory, memory_lens, hyps), scores)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_equals_exhaustive_search(alpha):
    """V = 4 (blank, eos, two tokens), budget 3 tokens: 15 hypotheses; a beam of 16 is exact."""
    dec = make_decoder(vocab=4, eos_bias=0.0, seed=3)
    memory, memory_lens = make_memory(lens=(3, 3), seed=2)
    assert max_lengths(memory_lens, 1.0).tolist() == [3, 3]
    hyps_all = [list(s) for n in range(4) for s in itertools.product([2, 3], repeat=n)]
    hyps, scores, _ = beam_search(dec, memory, memory_lens, 16, alpha, 1.0)
    for b in range(2):
        mem, lens = memory[b:b + 1].expand(len(hyps_all), -1, -1), memory_lens[b:b + 1].expand(len(hyps_all))
        logp = sequence_log_prob(dec, mem, lens, hyps_all)
        key = logp / torch.tensor([len(h) + 1.0 for h in hyps_all]) ** alpha
        best = int(key.argmax())
        assert hyps[b] == hyps_all[best]
        torch.testing.assert_close(scores[b], logp[best])


@pytest.mark.parametrize("attention", ATTENTION)
def test_padding_invariance(attention):
    """An utterance decoded alone and inside a padded batch gives the same result."""
    dec = make_decoder(attention)
    memory, memory_lens = make_memory(lens=(9, 4, 6))
    ctc = torch.randn(3, 9, 12, dtype=torch.float64).log_softmax(-1)
    searches = {
        "greedy": lambda m, l, c: greedy_search(dec, m, l, 2.0),
        "beam": lambda m, l, c: beam_search(dec, m, l, 4, 1.0, 2.0),
        "hybrid": lambda m, l, c: beam_search(dec, m, l, 4, 1.0, 2.0, c, 0.4, 6),
    }
    for name, search in searches.items():
        hyps, scores, steps = search(memory, memory_lens, ctc)
        for b in range(3):
            n = int(memory_lens[b])
            alone = search(memory[b:b + 1, :n], memory_lens[b:b + 1], ctc[b:b + 1, :n])
            assert alone[0] == [hyps[b]] and alone[2] == [steps[b]], name
            torch.testing.assert_close(alone[1], scores[b:b + 1], msg=name)


def _brute_force_ctc(log_probs, length):
    """{collapsed label sequence: probability} over every path of ``length`` frames."""
    probs = log_probs[:length].exp()
    out = {}
    for path in itertools.product(range(probs.shape[1]), repeat=length):
        p = math.prod(float(probs[t, s]) for t, s in enumerate(path))
        labels = tuple(s for i, s in enumerate(path) if s != 0 and (i == 0 or path[i - 1] != s))
        out[labels] = out.get(labels, 0.0) + p
    return out


def test_ctc_prefix_scorer_against_brute_force():
    """ψ(h) = P(CTC output starts with h); ψ(h + eos) = P(output == h). Two utterances, one padded."""
    torch.manual_seed(0)
    V, lengths = 4, torch.tensor([5, 3])  # ids: 0 blank, 1 eos, 2 and 3 labels
    log_probs = torch.randn(2, 5, V, dtype=torch.float64).log_softmax(-1)
    log_probs[1, 3:] = torch.randn(2, V)  # garbage in the padding must not matter
    seqs = [_brute_force_ctc(log_probs[b], int(lengths[b])) for b in range(2)]

    def prefix_prob(b, h):
        return sum(p for s, p in seqs[b].items() if s[: len(h)] == tuple(h))

    scorer = CTCPrefixScorer(log_probs, lengths)
    candidates = torch.tensor([[2, 3, EOS], [2, 3, EOS]])
    prefixes, log_psi = [[], []], torch.zeros(2, dtype=torch.float64)
    for step_tokens in ([2, 3], [2, 2], [3, 2]):  # includes a repeated label (needs a blank between)
        delta = scorer.score(candidates)
        for b in range(2):
            for c, tok in enumerate(candidates[b].tolist()):
                h = prefixes[b]
                want = seqs[b].get(tuple(h), 0.0) if tok == EOS else prefix_prob(b, h + [tok])
                got = math.exp(float(log_psi[b] + delta[b, c]))
                assert got == pytest.approx(want, rel=1e-9, abs=1e-15), (b, h, tok)
        tokens = torch.tensor(step_tokens)
        slot = (candidates == tokens[:, None]).long().argmax(1)
        log_psi = log_psi + delta[torch.arange(2), slot]
        scorer.advance(torch.arange(2), tokens)
        prefixes = [p + [t] for p, t in zip(prefixes, step_tokens)]
    # utterance 1 has 3 frames: the 3-label prefix [3, 2, 2] needs 4 frames, so it is impossible
    assert prefix_prob(1, prefixes[1]) == 0.0 and log_psi[1] == float("-inf")


def test_hybrid_score_is_weighted_sum_of_attention_and_ctc():
    dec = make_decoder(seed=5)
    memory, memory_lens = make_memory(lens=(9, 6), seed=5)
    ctc = torch.randn(2, 9, 12, dtype=torch.float64).log_softmax(-1)
    w = 0.3
    hyps, scores, _ = beam_search(dec, memory, memory_lens, 4, 1.0, 2.0, ctc, w, 12)
    att = sequence_log_prob(dec, memory, memory_lens, hyps)
    for b, h in enumerate(hyps):
        ctc_ll = -F.ctc_loss(ctc[b:b + 1].transpose(0, 1), torch.tensor([h]), memory_lens[b:b + 1],
                             torch.tensor([len(h)]), reduction="sum")
        assert float(scores[b]) == pytest.approx((1 - w) * float(att[b]) + w * float(ctc_ll), abs=1e-4)


def test_max_length_budget_and_steps():
    dec = make_decoder(eos_bias=-50.0)  # never ends by itself: every hypothesis hits the budget
    memory, memory_lens = make_memory(lens=(9, 4))
    hyps, _, steps = greedy_search(dec, memory, memory_lens, 0.5)
    assert [len(h) for h in hyps] == [5, 2] and steps == [6, 3]
    hyps, _, steps = beam_search(dec, memory, memory_lens, 3, 1.0, 0.5)
    assert [len(h) for h in hyps] == [5, 2] and steps == [6, 3]


def test_benchmark_smoke(tmp_path):
    from asr_zoo.bench.seq2seq_decode import main as bench_main

    assert bench_main(["--out", str(tmp_path), "--repeats", "1", "--attention", "linear", "--d-model", "16",
                       "--layers", "1", "--heads", "2", "--ffn-dim", "32", "--vocab", "10", "--frames", "6",
                       "--tokens", "3", "--beams", "1,2", "--batch", "2", "--prefix-lengths", "1,4"]) == 0
    records = [json.loads(line) for line in (tmp_path / "seq2seq_decode.jsonl").read_text().splitlines()]
    assert {(r["kind"], r["cache"]) for r in records} == {(k, c) for k in ("latency", "throughput", "step")
                                                          for c in (True, False)}
    assert "| linear | yes | greedy |" in (tmp_path / "seq2seq_decode.md").read_text()
    assert (tmp_path / "seq2seq_decode_step_cost.png").stat().st_size > 0
