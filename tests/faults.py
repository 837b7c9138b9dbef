"""kill -9 harness: run an ``asr-zoo`` command, SIGKILL it at seeded random points, rerun it,
and check that what it left on disk is whole and free of duplicates.

The commands run as subprocesses (``python -m asr_zoo.cli ...``) in their own session, so a
kill takes the whole process group: rendering pools (``prepare synth``), lhotse's feature
extraction workers and dataloader workers die with the command, as with a lost machine.

Typical use (see ``tests/test_kill9.py``)::

    from faults import cli_cmd, timed_run, kill_points, kill_and_rerun, assert_nothing_torn, assert_no_duplicates

    cmd = cli_cmd("eval", "run", "--device", "cpu")
    full = timed_run(cmd, cwd=work_a, watch=work_a)        # uninterrupted reference run
    delays = kill_points(seed, full.work_window(), n=1)    # seconds after the first write, random.Random(seed)
    report = kill_and_rerun(cmd, delays, cwd=work_b, watch=work_b,
                            after_kill=lambda k: assert_nothing_torn(work_b))
    assert report.rerun.rc == 0
    assert_nothing_torn(work_b); assert_no_duplicates(work_b)

* :func:`cli_cmd` -- the argv of an ``asr-zoo`` command run by this interpreter.
* :func:`timed_run` -- run to completion, timing it and (with ``watch``) noting when files
  under ``watch`` first and last appeared or changed; :meth:`Timed.work_window` is the span
  from the first to the last write, counted from the first: the part of the run worth
  killing (before it only imports happen, after it only the interpreter's shutdown).
  :meth:`Timed.window` is "first write to the end" counted from the start.
* :func:`kill_points` -- ``n`` delays drawn uniformly from a window by ``random.Random(seed)``.
* :func:`kill_and_rerun(cmd, delays, env=None, cwd=None, after_kill=None, watch=None)
  <kill_and_rerun>` -- for each delay in turn: start ``cmd``, SIGKILL its process group
  after the delay (counted from the first write under ``watch`` when given; if the command
  is still running), wait until no process of the group is left and
  call ``after_kill(kill)``; then run ``cmd`` once more to completion. Returns a
  :class:`KillReport` (each kill: delay, whether it landed or the command had already
  finished, its exit status; the rerun's status, time and output). Several delays means
  several kills in a row before the rerun. With ``reset`` (restore the starting state), a
  kill that came after the command had finished is retried at half the delay. Generic: a ``train`` case is
  ``kill_and_rerun(cli_cmd("train", *overrides), delays, cwd=...)``.
* :func:`assert_nothing_torn(root, cwd=None) <assert_nothing_torn>` -- load every artefact
  under ``root`` (JSON, JSONL, lhotse cut sets and every feature matrix they reference, FLAC,
  ``.pt`` / ``.ckpt`` with ``torch.load(weights_only=True)``, TSV / CSV, YAML, sentencepiece
  models, LibriSpeech transcripts, the ``.done`` markers); raises ``AssertionError`` naming
  every file that does not load. Relative paths inside manifests are resolved from ``cwd``
  (the command's working directory). Temporary files of interrupted writes are not loaded
  (nothing reads them: every writer renames a finished temp onto the final name) but listed
  in the report as ``leftovers``; a checkpoint that loads only with ``weights_only=False``
  is listed as a ``finding`` (such files cannot be loaded safely when untrusted).
* :func:`assert_no_duplicates(root, cwd=None) <assert_no_duplicates>` -- utterance ids unique
  in every cut set, JSONL manifest, TSV keyed by ``utt_id`` (hypotheses), corpus report's
  drop list and split of
  transcripts; every audio file of a LibriSpeech split listed in a transcript, once.

Temporary names (what counts as a leftover): ``utils.atomic_replace`` writes
``.tmp-<random>-<name>`` (``.<name>.<random>.tmp`` before it kept suffixes);
``data.synth`` writes ``.<name>.<pid>.tmp`` and ``<utt>.flac.<pid>.tmp``; downloads go to
``<name>.part``.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

__all__ = ["cli_cmd", "default_env", "Timed", "timed_run", "kill_points", "Kill", "KillReport", "kill_and_rerun",
           "TornReport", "is_temp", "assert_nothing_torn", "assert_no_duplicates", "cut_set_content", "tree_digest"]


def cli_cmd(*args: str) -> list[str]:
    """argv running ``asr-zoo <args>`` with this interpreter."""
    return [sys.executable, "-m", "asr_zoo.cli", *map(str, args)]


def default_env(threads: int = 1, **extra: str) -> dict:
    """The environment commands run in: this one, with few threads, offline wandb, unbuffered output."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), WANDB_MODE="offline",
               PYTHONUNBUFFERED="1", **extra)
    return env


# -- running and killing ------------------------------------------------------------------------

def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                st = os.stat(p)
            except FileNotFoundError:  # renamed or removed while we looked
                continue
            out[p] = (st.st_mtime_ns, st.st_size)
    return out


def _start(cmd: Sequence[str], env: Optional[dict], cwd, log) -> subprocess.Popen:
    return subprocess.Popen(list(cmd), cwd=cwd, env=env if env is not None else default_env(),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _reap_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGKILL every process of ``proc``'s group and wait until none is left."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # orphaned workers are re-parented, killed and reaped by init
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.02)
    raise RuntimeError(f"processes of group {pgid} still alive {timeout} s after SIGKILL")


def _read_log(log) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")


@dataclass
class Timed:
    """An uninterrupted run: exit status, seconds, when the first output appeared, output."""

    rc: int
    seconds: float
    first_write_s: Optional[float]  # when a file under ``watch`` first appeared or changed
    output: str
    last_write_s: Optional[float] = None  # ... and when for the last time (before exiting)

    def window(self, hi: float = 0.95) -> tuple[float, float]:
        """(first write, ``hi`` x duration), in seconds after start: kills drawn here land while
        the command works (before the first write it only imports)."""
        lo = self.first_write_s if self.first_write_s is not None else 0.0
        return (min(lo, hi * self.seconds), hi * self.seconds)

    def work_window(self) -> tuple[float, float]:
        """(0, time from the first to the last write): delays counted from the first write, for
        ``kill_and_rerun(..., watch=...)``. Start-up (imports) and shutdown (a second or more
        for a process holding torch and lightning) vary with the machine's load far more than
        the work does, and nothing is written during either: counting from the first write and
        stopping at the last keeps kills among the writes."""
        first = self.first_write_s or 0.0
        last = self.last_write_s if self.last_write_s is not None else self.seconds
        return (0.0, max(last - first, 0.0))


def timed_run(cmd: Sequence[str], env: Optional[dict] = None, cwd=None, watch=None, timeout: float = 300.0,
              poll_s: float = 0.01) -> Timed:
    """Run ``cmd`` to completion; with ``watch`` (a directory), note the first moment a file under
    it appeared or changed (polled every ``poll_s``)."""
    seen = _snapshot(Path(watch)) if watch is not None else None
    first = last = None
    with tempfile.TemporaryFile() as log:
        t0 = time.monotonic()
        proc = _start(cmd, env, cwd, log)
        try:
            while proc.poll() is None:
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"{cmd} ran past {timeout} s:\n{_read_log(log)[-3000:]}")
                if watch is not None and (now := _snapshot(Path(watch))) != seen:
                    seen, last = now, time.monotonic() - t0
                    first = last if first is None else first
                time.sleep(poll_s)
            seconds = time.monotonic() - t0
        finally:
            _reap_group(proc)
        if watch is not None and _snapshot(Path(watch)) != seen:  # written just before exiting
            last = seconds
            first = last if first is None else first
        return Timed(proc.returncode, seconds, first, _read_log(log), last)


def kill_points(seed: int, window: tuple[float, float], n: int = 1) -> list[float]:
    """``n`` kill delays (seconds after start) uniform in ``window``, from ``random.Random(seed)``."""
    rng = random.Random(seed)
    return [round(rng.uniform(*window), 3) for _ in range(n)]


@dataclass
class Kill:
    delay: float  # seconds after start, or after the first write (``watch``)
    landed: bool  # False: the command had exited before the delay was up
    rc: Optional[int]  # the command's exit status (-9 when killed)
    at_s: float = 0.0  # seconds after start when the kill was sent (or the command ended)
    output: str = ""


@dataclass
class KillReport:
    kills: list[Kill]
    rerun: Timed

    def summary(self) -> str:
        ks = ", ".join(f"{k.delay:.2f}s{'' if k.landed else ' (finished first, rc %s)' % k.rc}" for k in self.kills)
        return f"killed at [{ks}]; rerun rc {self.rerun.rc} in {self.rerun.seconds:.1f} s"


def kill_and_rerun(cmd: Sequence[str], delays: Sequence[float], env: Optional[dict] = None, cwd=None,
                   after_kill: Optional[Callable[[Kill], None]] = None, timeout: float = 300.0,
                   watch=None, poll_s: float = 0.01, reset: Optional[Callable[[], None]] = None,
                   retries: int = 2) -> KillReport:
    """Start ``cmd`` and SIGKILL its process group after ``delays[0]`` s, again for every further
    delay, then run it to completion once more. With ``watch`` (a directory) a delay counts from
    the first moment a file under it appears or changes (see :meth:`Timed.work_window`).
    ``after_kill(kill)`` runs after each kill, once the group is gone (e.g.
    ``assert_nothing_torn``). The rerun's ``rc`` is not checked here.

    A command that ends before its kill (a loaded machine runs at another pace than the
    reference run) is recorded with ``landed=False``; given ``reset`` (which restores the
    starting state), it is then tried again up to ``retries`` times with half the delay."""
    kills = []
    pending = list(delays)
    tries = 0
    while pending:
        delay = pending.pop(0)
        before = _snapshot(Path(watch)) if watch is not None else None
        with tempfile.TemporaryFile() as log:
            t0 = time.monotonic()
            proc = _start(cmd, env, cwd, log)
            try:
                while watch is not None and proc.poll() is None and _snapshot(Path(watch)) == before:
                    if time.monotonic() - t0 > timeout:
                        raise TimeoutError(f"{cmd} wrote nothing under {watch} in {timeout} s")
                    time.sleep(poll_s)
                proc.wait(timeout=delay)
                landed = False
            except subprocess.TimeoutExpired:
                landed = True
            finally:
                at = time.monotonic() - t0
                _reap_group(proc)
            kill = Kill(delay, landed, proc.returncode, round(at, 3), _read_log(log))
        kills.append(kill)
        if after_kill is not None:
            after_kill(kill)
        if not landed and reset is not None and tries < retries:
            tries += 1
            reset()
            pending.insert(0, round(delay / 2, 3))
    return KillReport(kills, timed_run(cmd, env, cwd, timeout=timeout))


# -- checkers ---------------------------------------------------------------------------------

def is_temp(path: Path) -> bool:
    """Whether ``path`` is the temporary file of an unfinished write (see the module docstring)."""
    n = path.name
    return n.startswith(".tmp-") or n.endswith(".part") or (n.endswith(".tmp") and (n.startswith(".") or ".flac." in n))


@dataclass
class TornReport:
    checked: Counter = field(default_factory=Counter)  # kind -> files (or feature matrices) loaded
    leftovers: list[Path] = field(default_factory=list)  # temps of interrupted writes (not loaded)
    findings: list[str] = field(default_factory=list)  # loads, but not safely (weights_only=False needed)
    unchecked: list[Path] = field(default_factory=list)  # no loader for this kind of file


def _load_cuts(path: Path, report: TornReport) -> None:
    from lhotse import CutSet

    from asr_zoo.data.prepare import _resolve_feature_paths

    cuts = CutSet.from_file(path)
    if path.parent.name.startswith("fbank"):  # <root>/fbank<F>/<split>_cuts: archives stored relative to root
        cuts = _resolve_feature_paths(cuts, path.parent.parent, path.parent)
    report.checked["cut sets"] += 1
    for cut in cuts:
        if cut.has_features:
            feats = cut.load_features()
            if feats.shape[0] != cut.num_frames or not feats.size:
                raise ValueError(f"cut {cut.id}: {feats.shape} features, {cut.num_frames} frames declared")
            report.checked["feature matrices"] += 1
        elif cut.has_recording:
            for source in cut.recording.sources:
                if source.type == "file" and not Path(source.source).exists():
                    raise FileNotFoundError(f"cut {cut.id}: audio {source.source} does not exist")


def _load_pt(path: Path, report: TornReport) -> None:
    import pickle

    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # a whole file with objects outside the safe set
        if "Weights only load failed" not in str(e):
            raise
        torch.load(path, map_location="cpu", weights_only=False)  # whole, but not loadable safely
        report.findings.append(f"{path}: loads only with weights_only=False ({str(e).splitlines()[0]})")
    report.checked["torch files"] += 1


def _load_table(path: Path, delimiter: str) -> list[list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    if not rows:
        raise ValueError("empty table (no header)")
    bad = [i for i, r in enumerate(rows) if len(r) != len(rows[0])]
    if bad:
        raise ValueError(f"rows {bad[:5]} have another number of columns than the header ({len(rows[0])})")
    return rows


def _load_trans(path: Path) -> list[str]:
    ids = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        utt, _, text = line.partition(" ")
        if not line.strip() or not text.strip() or utt.count("-") != 2:
            raise ValueError(f"line {i} is not '<spk>-<chapter>-<n> TEXT': {line!r}")
        ids.append(utt)
    return ids


def _check_file(path: Path, report: TornReport) -> None:
    name = path.name
    if name.endswith(".jsonl.gz"):
        _load_cuts(path, report)
    elif name.endswith(".json") or name == ".done":
        json.loads(path.read_text())
        report.checked["json"] += 1
    elif name.endswith(".jsonl"):
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        report.checked["jsonl"] += 1
    elif name.endswith((".pt", ".ckpt")):
        _load_pt(path, report)
    elif name.endswith(".flac") or name.endswith(".wav"):
        import soundfile as sf

        audio, _ = sf.read(str(path))
        if not len(audio):
            raise ValueError("empty audio")
        report.checked["audio"] += 1
    elif name.endswith(".trans.txt"):
        _load_trans(path)
        report.checked["transcripts"] += 1
    elif name.endswith((".tsv", ".csv")):
        _load_table(path, "\t" if name.endswith(".tsv") else ",")
        report.checked["tables"] += 1
    elif name.endswith((".yaml", ".yml")):
        import yaml

        yaml.safe_load(path.read_text())
        report.checked["yaml"] += 1
    elif name.endswith(".model"):
        import sentencepiece as spm

        spm.SentencePieceProcessor(model_file=str(path))
        report.checked["sentencepiece"] += 1
    elif name.endswith(".lca"):
        pass  # feature archives are loaded through the cut sets that reference them
    else:
        report.unchecked.append(path)


def _chdir(cwd):
    return contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext()


def assert_nothing_torn(root, cwd=None) -> TornReport:
    """Load every artefact under ``root`` (see the module docstring); raise ``AssertionError``
    listing each one that does not load. ``cwd``: where relative paths in manifests start."""
    report, torn = TornReport(), []
    with _chdir(cwd):
        for path in sorted(Path(root).rglob("*")):
            if not path.is_file():
                continue
            if is_temp(path):
                report.leftovers.append(path)
                continue
            try:
                _check_file(path, report)
            except Exception as e:  # noqa: BLE001 -- every failure is a torn file
                torn.append(f"{path}: {type(e).__name__}: {str(e)[:300]}")
    if torn:
        raise AssertionError(f"{len(torn)} torn file(s) under {root}:\n" + "\n".join(torn))
    return report


def assert_no_duplicates(root, cwd=None) -> Counter:
    """Raise ``AssertionError`` if an utterance id repeats in a cut set / JSONL manifest /
    hypotheses TSV / split of LibriSpeech transcripts, or an audio file of a split is listed
    more or less than once. Returns how many id lists were checked, by kind."""
    from lhotse import CutSet

    root, problems, checked = Path(root), [], Counter()

    def dups(ids) -> list:
        return sorted(i for i, n in Counter(ids).items() if n > 1)

    with _chdir(cwd):
        for path in sorted(root.rglob("*")):
            if not path.is_file() or is_temp(path):
                continue
            name = path.name
            if name.endswith(".jsonl.gz"):
                cuts = list(CutSet.from_file(path))
                for what, ids in (("cut", [c.id for c in cuts]),
                                  ("supervision", [s.id for c in cuts for s in c.supervisions])):
                    if d := dups(ids):
                        problems.append(f"{path}: {what} ids repeated: {d[:10]}")
                checked["cut sets"] += 1
            elif name.endswith(".jsonl"):
                ids = [json.loads(line).get("id") for line in path.read_text().splitlines() if line.strip()]
                if d := dups(i for i in ids if i is not None):
                    problems.append(f"{path}: ids repeated: {d[:10]}")
                checked["jsonl"] += 1
            elif name.endswith("_report.json"):  # manifests/<split>_report.json: each drop once
                dropped = json.loads(path.read_text()).get("dropped", [])
                if d := dups(x.get("id") for x in dropped):
                    problems.append(f"{path}: dropped utterances listed more than once: {d[:10]}")
                checked["reports"] += 1
            elif name.endswith(".tsv") and (rows := _load_table(path, "\t"))[0][:1] == ["utt_id"]:
                if d := dups(r[0] for r in rows[1:]):  # hypotheses, per-utterance errors, ...
                    problems.append(f"{path}: utterances repeated: {d[:10]}")
                checked["utterance tables"] += 1
        for ls in root.rglob("LibriSpeech"):
            for split in (p for p in ls.iterdir() if p.is_dir()):
                listed = [(tf.parent, u) for tf in sorted(split.glob("*/*/*.trans.txt")) for u in _load_trans(tf)]
                if d := dups(u for _, u in listed):
                    problems.append(f"{split}: transcript ids repeated: {d[:10]}")
                audio = Counter(p.stem for p in split.glob("*/*/*") if p.suffix in (".flac", ".wav"))
                if d := dups(audio.elements()):
                    problems.append(f"{split}: audio file names repeated: {d[:10]}")
                named = Counter(u for d_, u in listed if (d_ / f"{u}.flac").exists() or (d_ / f"{u}.wav").exists())
                if unlisted := sorted(set(audio) - set(named)):
                    problems.append(f"{split}: audio files in no transcript: {unlisted[:10]}")
                checked["splits"] += 1
    if problems:
        raise AssertionError(f"duplicates under {root}:\n" + "\n".join(problems))
    return checked


# -- comparing outputs ------------------------------------------------------------------------

def cut_set_content(path) -> list[str]:
    """The JSON lines of a gzipped manifest (its bytes hold the gzip time stamp)."""
    with gzip.open(path, "rt") as f:
        return f.read().splitlines()


def tree_digest(root, exclude: Callable[[Path], bool] = is_temp) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root`` (temporaries excluded)."""
    import hashlib

    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not exclude(p)}
