"""The ``asr-zoo`` command line.

Usage::

    asr-zoo prepare synth --out data/synth                     # the default corpus
    asr-zoo prepare librispeech --root data/librispeech [--download]
    asr-zoo prepare fsdd --src free-spoken-digit-dataset --out data/fsdd   # real recordings
    asr-zoo train data=synth data.root=data/synth objective=ctc attention=softmax run_dir=runs/ctc
    asr-zoo eval runs/ctc [--split test] [attention=iclustered ...]
    asr-zoo align runs/ctc --split train                        # expert alignments for the Imputer
    asr-zoo train objective=imputer_dp objective.expert=runs/ctc run_dir=runs/dp
    asr-zoo compare runs/* [--out table.md]
    asr-zoo bench attention | rnnt-loss | imputer-loss | seq2seq-decode | loader [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from pathlib import Path

__all__ = ["main"]

BENCHES = {
    "attention": "asr_zoo.bench.attention",
    "rnnt-loss": "asr_zoo.bench.rnnt_loss",
    "imputer-loss": "asr_zoo.bench.imputer_loss",
    "seq2seq-decode": "asr_zoo.bench.seq2seq_decode",
    "train-step": "asr_zoo.bench.train_step",
    "loader": "asr_zoo.bench.loader",
}


def _cmd_prepare(args) -> int:
    if args.corpus == "synth":
        from .data.librispeech import prepare_librispeech
        from .data.synth import prepare_synth

        summary = prepare_synth(Path(args.out), num_train=args.num_train, num_dev=args.num_dev,
                                num_test=args.num_test, seed=args.seed, num_workers=args.workers,
                                seconds=_seconds(args), layout=args.layout, condition=args.condition)
        for split, st in summary["splits"].items():
            print(f"{split}: {st['utterances']} utterances, {st['hours']:.2f} h, {st['speakers']} speakers, "
                  f"{st['dropped']} dropped ({args.out}/synth_info.json has the details)")
        prepare_librispeech(Path(args.out), on_bad=args.on_bad)
    elif args.corpus == "fsdd":
        from .data.fsdd import prepare_fsdd

        summary = prepare_fsdd(Path(args.src), Path(args.out), tuple(args.dev_speakers), tuple(args.test_speakers),
                               args.min_digits, args.max_digits, args.train_passes, args.seed)
        for split, st in summary["splits"].items():
            voices = ", ".join(f"{s} ({accent})" for s, accent in st["speakers"].items())
            print(f"{split}: {st['utterances']} utterances, {st['digits']} digits, {st['hours']:.2f} h; {voices}")
    else:
        from .data.librispeech import download_librispeech, prepare_librispeech

        if args.download:  # every part without --parts; resumes, checks md5, then extracts
            download_librispeech(Path(args.root), args.parts or None, base_url=args.base_url,
                                 verify_md5=not args.no_md5)
        prepare_librispeech(Path(args.root), args.parts or None, on_bad=args.on_bad)
    return 0


def _seconds(args):
    if (args.min_seconds is None) != (args.max_seconds is None):
        raise SystemExit("asr-zoo prepare synth: give both --min-seconds and --max-seconds, or neither")
    return None if args.min_seconds is None else (args.min_seconds, args.max_seconds)


def _cmd_train(args) -> int:
    from .config import compose
    from .train import train

    train(compose(args.overrides))
    return 0


def _cmd_eval(args) -> int:
    from .evaluate import evaluate, tune

    if args.tune:
        grid = dict(_parse_tune(t) for t in args.tune)
        tune(Path(args.run_dir), grid, args.overrides, test_split=(args.split or [None])[0], device=args.device,
             checkpoint=args.checkpoint, max_utts=args.max_utts)
        return 0
    for split in args.split or [None]:
        evaluate(Path(args.run_dir), split, args.overrides, device=args.device, checkpoint=args.checkpoint,
                 max_utts=args.max_utts)
    return 0


def _cmd_average(args) -> int:
    from .average import average_run

    average_run(Path(args.run_dir), last=args.last or 0, best=args.best or 0)
    return 0


def _cmd_align(args) -> int:
    from .aligner import align_run

    align_run(Path(args.run_dir), args.split, device=args.device)
    return 0


def _parse_tune(spec: str) -> tuple[str, list[str]]:
    """``key=v1,v2,...`` -> ``(key, [v1, v2, ...])``."""
    key, sep, values = spec.partition("=")
    if not sep or not key or not values:
        from .config import ConfigError

        raise ConfigError(f"--tune {spec!r}: expected key=v1,v2,...")
    return key, values.split(",")


def _cmd_compare(args) -> int:
    from .report.table import (GROUP_COLUMNS, add_significance, collect_rows, find_runs, group_rows,
                               markdown_table, warn_skipped, write_report)

    runs, skipped = find_runs(args.run_dirs)
    warn_skipped(skipped)
    if not runs:
        raise FileNotFoundError(f"no run with results among {len(args.run_dirs)} path(s)")
    rows = collect_rows(runs, args.split)
    print(markdown_table(rows), end="")
    groups = group_rows(rows)
    if args.baseline:
        add_significance(groups, args.baseline)
    if args.baseline or any(g["n"] > 1 for g in groups) or args.out:
        print("\nConfigurations (mean ± std over seeds; d_wer vs --baseline, * = 95% CI excludes 0):")
        print(markdown_table(groups, GROUP_COLUMNS), end="")
    if args.out:
        for path in write_report(groups, rows, args.out):
            print(f"wrote {path}")
    if args.online or os.environ.get("WANDB_MODE") == "online":
        from .report.online import log_table

        log_table(groups, GROUP_COLUMNS, project=args.project)
    return 0


def _cmd_sweep(args) -> int:
    from .sweep import run_sweep

    return run_sweep(Path(args.sweep), count=args.count, workers=args.workers, threads=args.threads,
                     devices=args.devices.split(",") if args.devices else None, online=args.online,
                     sweep_dir=args.dir, storage=args.storage, eval_split=args.eval_split or None,
                     project=args.project)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr-zoo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    prep = sub.add_parser("prepare", help="make or prepare a corpus")
    psub = prep.add_subparsers(dest="corpus", required=True)
    s = psub.add_parser("synth", help="render the synthetic espeak-ng corpus (LibriSpeech layout)")
    s.add_argument("--out", required=True, help="output directory (later: data.root)")
    s.add_argument("--num-train", type=int, default=2000)
    s.add_argument("--num-dev", type=int, default=200)
    s.add_argument("--num-test", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--min-seconds", type=float, help="long utterances: several sentences each, "
                   "about --min-seconds to --max-seconds long (e.g. 15 and 35, as LibriSpeech)")
    s.add_argument("--max-seconds", type=float)
    s.add_argument("--layout", choices=("synth", "librispeech"), default="synth",  # data/synth.py LAYOUTS
                   help="split names: train/dev/test, or LibriSpeech's train-clean-100, dev-clean, dev-other, "
                   "test-clean, test-other (--num-dev/--num-test per dev/test set; 'other': unseen voices, noisier)")
    s.add_argument("--condition", choices=("clean", "hard"), default="clean",  # data/synth.py CONDITIONS
                   help="hard: child-like voices, changing rates, reverberation, 0-20 dB noise, test words unseen "
                   "in training (a stand-in for a first small real corpus)")
    s.add_argument("--on-bad", choices=["drop", "fail"], default="drop")
    fs = psub.add_parser("fsdd", help="real recordings: the Free Spoken Digit Dataset as connected digits, "
                         "split by speaker (JSONL manifests for data=fsdd)")
    fs.add_argument("--src", required=True, help="a clone of github.com/Jakobovski/free-spoken-digit-dataset")
    fs.add_argument("--out", required=True, help="output directory (later: data.root)")
    fs.add_argument("--dev-speakers", nargs="+", default=["george"])
    fs.add_argument("--test-speakers", nargs="+", default=["nicolas"])
    fs.add_argument("--min-digits", type=int, default=1)
    fs.add_argument("--max-digits", type=int, default=7)
    fs.add_argument("--train-passes", type=int, default=3, help="times each training recording is used, "
                    "in differently joined strings")
    fs.add_argument("--seed", type=int, default=0)
    ls = psub.add_parser("librispeech", help="prepare LibriSpeech under ROOT/LibriSpeech")
    ls.add_argument("--root", required=True, help="directory holding (or receiving) LibriSpeech/")
    ls.add_argument("--download", action="store_true", help="download missing parts from openslr.org")
    ls.add_argument("--parts", nargs="*", help="splits to download / prepare (default: all seven / every one present)")
    ls.add_argument("--base-url", help="where <part>.tar.gz lives (default $ASR_ZOO_LIBRISPEECH_URL or openslr.org)")
    ls.add_argument("--no-md5", action="store_true",
                    help="skip the published-md5 check (a mirror serving other bytes); the tar.gz is still checked")
    ls.add_argument("--on-bad", choices=["drop", "fail"], default="drop")
    prep.set_defaults(func=_cmd_prepare)

    t = sub.add_parser("train", help="train one run: asr-zoo train group=choice dotted.key=value ...")
    t.add_argument("overrides", nargs="*")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="decode a split; writes RUN_DIR/results/<split>.json")
    e.add_argument("run_dir")
    e.add_argument("overrides", nargs="*", help="evaluation-time overrides, e.g. attention=iclustered")
    e.add_argument("--split", action="append", help="split name (repeatable; default: data.test_split)")
    e.add_argument("--device", default="cuda" if _cuda() else "cpu")
    e.add_argument("--checkpoint", default="best", help="best | last | averaged (asr-zoo average) | epoch-EEE")
    e.add_argument("--max-utts", type=int, default=0, help="decode only the first N utterances")
    e.set_defaults(func=_cmd_eval)

    av = sub.add_parser("average", help="average per-epoch checkpoints into checkpoints/averaged.ckpt")
    av.add_argument("run_dir")
    which = av.add_mutually_exclusive_group(required=True)
    which.add_argument("--last", type=int, help="the N latest epochs (trainer.keep_epoch_checkpoints >= N)")
    which.add_argument("--best", type=int, help="the N kept epochs with the lowest dev WER")
    av.set_defaults(func=_cmd_average)

    a = sub.add_parser("align", help="store the Viterbi alignments of a CTC run (the Imputer's expert)")
    a.add_argument("run_dir")
    a.add_argument("--split", action="append", help="split to align (repeatable; default: the run's training splits)")
    a.add_argument("--device", default="cuda" if _cuda() else "cpu")
    a.set_defaults(func=_cmd_align)

    e.add_argument("--tune", action="append", metavar="KEY=V1,V2",
                   help="choose KEY on the dev split, then decode --split (default test) with the winner only")

    c = sub.add_parser("compare", help="tables (per run; per configuration over seeds), significance, plot")
    c.add_argument("run_dirs", nargs="+", help="run directories (other entries are skipped, with a note)")
    c.add_argument("--split", help="only this split")
    c.add_argument("--baseline", help="run dir, run name or configuration label: paired WER differences vs it")
    c.add_argument("--out", help="DIR/ (or an existing dir): table.md, table.csv, pareto.png inside; "
                                 "P: P.md, P.csv, P.png")
    c.add_argument("--online", action="store_true", help="also log the table to wandb")
    c.add_argument("--project", default="asr-zoo", help="wandb project (online)")
    c.set_defaults(func=_cmd_compare)

    w = sub.add_parser("sweep", help="run a sweep YAML: wandb agents online, Optuna offline (resumable)")
    w.add_argument("sweep", help="sweep YAML (conf/sweeps/*.yaml)")
    w.add_argument("--count", type=int, help="trials in total (grid: default all points)")
    w.add_argument("--workers", type=int, default=1, help="trials in parallel")
    w.add_argument("--threads", type=int, default=0, help="CPU threads per worker (default: cores / workers)")
    w.add_argument("--devices", help="comma-separated CUDA devices, one per worker in turn")
    w.add_argument("--online", action="store_true", default=None, help="wandb sweep + agents")
    w.add_argument("--offline", dest="online", action="store_false", help="Optuna, even with a wandb key")
    w.add_argument("--dir", help="offline sweep directory (default runs/sweeps/<yaml name>)")
    w.add_argument("--storage", help="Optuna storage URL shared by many machines (default DIR/study.db)")
    w.add_argument("--eval-split", default="dev", help="split decoded after each trial ('' = none)")
    w.add_argument("--project", default="asr-zoo", help="wandb project (online)")
    w.set_defaults(func=_cmd_sweep)

    b = sub.add_parser("bench", help="benchmarks that print figures (asr-zoo bench NAME --help)")
    b.add_argument("bench", choices=list(BENCHES))
    b.add_argument("bench_args", nargs=argparse.REMAINDER)
    b.set_defaults(func=_cmd_bench)
    return p


def _cmd_bench(args) -> int:
    module = importlib.import_module(BENCHES[args.bench])
    parser = argparse.ArgumentParser(prog=f"asr-zoo bench {args.bench}")
    module.add_arguments(parser)
    return module.run(parser.parse_args(args.bench_args))


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    # No WANDB_MODE default here: trainer.wandb (offline | online | disabled) decides the train
    # logger's mode (see asr_zoo.report.online.wandb_mode); a process-wide offline default made
    # trainer.wandb=online runs silently offline.
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # overrides may come after options: `asr-zoo eval RUN --split dev attention=linear`
        if not hasattr(args, "overrides") or any("=" not in e or e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("asr_zoo").addHandler(handler)
    if args.command in ("train", "eval", "align"):
        import lightning.pytorch  # noqa: F401  (it sets its own log level on import)

        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # keep the console to what matters
    warnings.filterwarnings("ignore", message="You are using Dynamic")  # lhotse: eager CutSets are fine here
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("asr-zoo: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (the one place that turns exceptions into messages)
        if args.debug:
            raise
        expected = _expected_error(e)
        if expected:
            print(f"asr-zoo: error: {e}", file=sys.stderr)
            return 2
        print(f"asr-zoo: unexpected error: {type(e).__name__}: {e}\n"
              "(this may be a bug; rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _expected_error(e: BaseException) -> bool:
    """Errors about the user's input (config, data, files, a diverged run): one line, no traceback.
    Anything else, e.g. a KeyError inside training, is reported as unexpected."""
    from .config import ConfigError
    from .data.corpora import BadUtterance
    from .utils import UntrustedFileError

    expected: tuple = (ConfigError, BadUtterance, FileNotFoundError, UntrustedFileError)
    if "asr_zoo.data.librispeech" in sys.modules:  # a corrupt download, an unreachable server
        import urllib.error

        from .data.librispeech import ArchiveError

        expected += (ArchiveError, urllib.error.URLError)
    if "lightning" in sys.modules or "asr_zoo.objectives" in sys.modules:
        from .objectives.base import TrainingDiverged

        expected += (TrainingDiverged,)
    return isinstance(e, expected)

if __name__ == "__main__":
    sys.exit(main())
