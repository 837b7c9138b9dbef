import itertools

import torch

from asr_zoo.decoding.ctc import collapse_ctc, ctc_greedy_decode, ctc_prefix_beam_search
from asr_zoo.losses.ctc import ctc_min_frames


def _brute_force_best_labeling(lp: torch.Tensor, blank: int = 0):
    """Most probable label sequence: sum path probabilities over all V^T alignments."""
    T, V = lp.shape
    scores = {}
    for path in itertools.product(range(V), repeat=T):
        labels = tuple(collapse_ctc(torch.tensor([path]), torch.tensor([T]), blank)[0])
        s = sum(float(lp[t, path[t]]) for t in range(T))
        scores[labels] = s if labels not in scores else float(torch.logaddexp(torch.tensor(scores[labels]), torch.tensor(s)))
    return max(scores.items(), key=lambda kv: kv[1])


def test_collapse_and_greedy():
    frames = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 0], [3, 0, 3, 3, 0, 0, 0, 0]])
    assert collapse_ctc(frames, torch.tensor([8, 4])) == [[1, 1, 2], [3, 3]]
    lp = torch.nn.functional.one_hot(frames, 4).float().log()
    assert ctc_greedy_decode(lp, torch.tensor([8, 2])) == [[1, 1, 2], [3]]


def test_prefix_beam_search_is_exact_with_a_wide_beam():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        lp = torch.randn(1, 5, 3, generator=g).mul(1.5).log_softmax(-1)
        best, _ = _brute_force_best_labeling(lp[0])
        assert ctc_prefix_beam_search(lp, torch.tensor([5]), beam_size=64, token_prune=3) == [list(best)]


def test_prefix_beam_beats_greedy_where_paths_split():
    # greedy picks blank everywhere, but label 1 spread over frames has more total mass
    p = torch.tensor([[0.4, 0.3, 0.3], [0.4, 0.3, 0.3], [0.4, 0.3, 0.3]])
    lp = p.log()[None]
    assert ctc_greedy_decode(lp, torch.tensor([3])) == [[]]
    assert ctc_prefix_beam_search(lp, torch.tensor([3]), beam_size=8) != [[]]


def test_ctc_min_frames_counts_repeats():
    targets = torch.tensor([[5, 5, 6, 6, 6], [7, 7, 0, 0, 0]])
    assert ctc_min_frames(targets, torch.tensor([5, 1])).tolist() == [5 + 3, 1]  # padding never counts
