"""Word error types: the Levenshtein alignment against brute force and torchmetrics, the rates in
results files, and ``compare`` filling them in from ``hyps.tsv`` for older results."""

from __future__ import annotations

import csv
import functools
import itertools
import json
import random

import pytest
import yaml
from torchmetrics.functional.text import word_error_rate
from torchmetrics.functional.text.wer import _wer_update

from asr_zoo.report.metrics import align_words, error_type_rates, utterance_word_errors, word_errors
from asr_zoo.report.table import collect_rows, markdown_table


def _all_alignments(ref: tuple, hyp: tuple) -> set[tuple[int, int, int]]:
    """Every (sub, del, ins) any alignment of ref and hyp can have (matches free): brute force."""
    @functools.cache
    def walk(i: int, j: int) -> frozenset:
        if i == len(ref) and j == len(hyp):
            return frozenset({(0, 0, 0)})
        out = set()
        if i < len(ref) and j < len(hyp):
            same = ref[i] == hyp[j]
            out |= {(s + (not same), d, n) for s, d, n in walk(i + 1, j + 1)}
        if i < len(ref):
            out |= {(s, d + 1, n) for s, d, n in walk(i + 1, j)}
        if j < len(hyp):
            out |= {(s, d, n + 1) for s, d, n in walk(i, j + 1)}
        return frozenset(out)

    return set(walk(0, 0))


def _replay(ops, ref, hyp) -> None:
    """The ops walk both sequences once, in order, and match/substitute what they claim."""
    i = j = 0
    for op, a, b in ops:
        if op in "=S":
            assert (a, b) == (i, j) and (ref[a] == hyp[b]) == (op == "=")
            i, j = i + 1, j + 1
        elif op == "D":
            assert (a, b) == (i, None)
            i += 1
        else:
            assert (op, a, b) == ("I", None, j)
            j += 1
    assert (i, j) == (len(ref), len(hyp))


@pytest.mark.parametrize("ref,hyp,expected", [
    ("a b c d", "a x c", (1, 1, 0)),
    ("a b c", "a b c", (0, 0, 0)),
    ("", "a b", (0, 0, 2)),
    ("a b", "", (0, 2, 0)),
    ("a b", "b a", (2, 0, 0)),             # tie: substitutions before a deletion + insertion
    ("the cat sat", "the cat cat sat", (0, 0, 1)),
    ("one two three four", "one three four", (0, 1, 0)),   # a dropped whole word
    ("a b c", "x y", (2, 1, 0)),
])
def test_known_examples(ref, hyp, expected):
    e = word_errors(ref, hyp)
    assert (e.sub, e.dels, e.ins) == expected and e.ref_words == len(ref.split())


def test_minimal_and_valid_against_brute_force():
    """Every pair of sequences over {a, b, c} up to length 4: the alignment replays both
    sequences, its cost is the minimum over all alignments, and its (sub, del, ins) is one an
    optimal alignment has."""
    words = "abc"
    seqs = [s for n in range(5) for s in itertools.product(words, repeat=n)]
    for ref in seqs:
        for hyp in seqs[::3] if len(ref) > 2 else seqs:
            ops = align_words(ref, hyp)
            _replay(ops, ref, hyp)
            counts = tuple(sum(op == k for op, _, _ in ops) for k in "SDI")
            every = _all_alignments(ref, hyp)
            best = min(map(sum, every))
            assert sum(counts) == best and counts in every, (ref, hyp, counts)
            assert counts[1] - counts[2] == len(ref) - len(hyp)


def test_edit_distance_equals_torchmetrics():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(6)]
    refs = [" ".join(rng.choices(vocab, k=rng.randint(1, 12))) for _ in range(300)]
    hyps = [" ".join(rng.choices(vocab, k=rng.randint(0, 12))) for _ in range(300)]
    for (edits, words), ref, hyp in zip(utterance_word_errors(refs, hyps), refs, hyps):
        tm_edits, tm_words = _wer_update([hyp], [ref])
        assert (edits, words) == (int(tm_edits), int(tm_words))
    rates = error_type_rates(refs, hyps)
    wer = 100 * float(word_error_rate(hyps, refs))
    assert rates["sub"] + rates["del"] + rates["ins"] == pytest.approx(wer, abs=2e-3)
    total = rates["num_sub"] + rates["num_del"] + rates["num_ins"]
    assert 100 * total / rates["num_ref_words"] == pytest.approx(wer, rel=1e-6)


def _run(root, name, result: dict, hyps: list[tuple[str, str]] | None):
    run = root / name
    (run / "results").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "run_dir": str(run), "objective": {"name": name},
                                                     "attention": {"name": "softmax"}}))
    (run / "results" / "test.json").write_text(json.dumps({
        "objective": name, "attention": "softmax", "params": 1, "split": "test", "num_utts": 2, "cer": 1.0,
        "decode_steps": 1.0, "latency_ms_p50": 1.0, "latency_ms_p90": 1.0, "rtf": 0.1, "device": "cpu", **result}))
    if hyps is not None:
        with open(run / "results" / "test.hyps.tsv", "w", newline="") as f:
            w = csv.writer(f, delimiter="\t")
            w.writerow(["utt_id", "reference", "hypothesis"])
            w.writerows((f"u{i}", r, h) for i, (r, h) in enumerate(hyps))
    return run


def test_compare_shows_error_types_and_scores_old_results(tmp_path):
    new = _run(tmp_path, "new", {"wer": 40.0, "sub": 10.0, "del": 20.0, "ins": 10.0}, None)
    old = _run(tmp_path, "old", {"wer": 60.0}, [("a b c d", "a x c"), ("e", "")])   # 1 sub, 2 del of 5
    bare = _run(tmp_path, "bare", {"wer": 50.0}, None)   # neither: blanks
    rows = {r["run"]: r for r in collect_rows([new, old, bare])}
    assert (rows["new"]["sub"], rows["new"]["del"], rows["new"]["ins"]) == (10.0, 20.0, 10.0)
    assert (rows["old"]["sub"], rows["old"]["del"], rows["old"]["ins"]) == (20.0, 40.0, 0.0)
    assert "sub" not in rows["bare"]
    table = markdown_table(list(rows.values()), ["run", "wer", "sub", "del", "ins"]).splitlines()
    assert table[0] == "| run | wer | sub | del | ins |"
    assert "| old | 60.00 | 20.00 | 40.00 | 0.00 |" in table and "| bare | 50.00 |  |  |  |" in table
