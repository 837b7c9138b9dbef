"""The ``asr-zoo`` command line.

Usage::

    asr-zoo prepare synth --out data/synth                     # the default corpus
    asr-zoo prepare librispeech --root data/librispeech [--download]
    asr-zoo train data=synth data.root=data/synth objective=ctc attention=softmax run_dir=runs/ctc
    asr-zoo eval runs/ctc [--split test] [attention=iclustered ...]
    asr-zoo align runs/ctc --split train                        # expert alignments for the Imputer
    asr-zoo train objective=imputer_dp objective.expert=runs/ctc run_dir=runs/dp
    asr-zoo compare runs/* [--out table.md]
    asr-zoo bench attention | rnnt-loss | imputer-loss | seq2seq-decode [--out DIR]
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
}


def _cmd_prepare(args) -> int:
    if args.corpus == "synth":
        from .data.librispeech import prepare_librispeech
        from .data.synth import prepare_synth

        summary = prepare_synth(Path(args.out), num_train=args.num_train, num_dev=args.num_dev,
                                num_test=args.num_test, seed=args.seed, num_workers=args.workers)
        for split, st in summary["splits"].items():
            print(f"{split}: {st['utterances']} utterances, {st['hours']:.2f} h, {st['speakers']} speakers, "
                  f"{st['dropped']} dropped ({args.out}/synth_info.json has the details)")
        prepare_librispeech(Path(args.out), on_bad=args.on_bad)
    else:
        from .data.librispeech import download_librispeech, prepare_librispeech

        if args.download:
            download_librispeech(Path(args.root), args.parts or None)
        prepare_librispeech(Path(args.root), args.parts or None, on_bad=args.on_bad)
    return 0


def _cmd_train(args) -> int:
    from .config import compose
    from .train import train

    train(compose(args.overrides))
    return 0


def _cmd_eval(args) -> int:
    from .evaluate import evaluate

    for split in args.split or [None]:
        evaluate(Path(args.run_dir), split, args.overrides, device=args.device, checkpoint=args.checkpoint,
                 max_utts=args.max_utts)
    return 0


def _cmd_align(args) -> int:
    from .align.store import align_run

    align_run(Path(args.run_dir), args.split, device=args.device)
    return 0


def _cmd_compare(args) -> int:
    from .report.table import collect_rows, markdown_table, write_tables

    rows = collect_rows(args.run_dirs, args.split)
    print(markdown_table(rows), end="")
    if args.out:
        for path in write_tables(rows, Path(args.out)):
            print(f"wrote {path}")
    return 0


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
    s.add_argument("--on-bad", choices=["drop", "fail"], default="drop")
    ls = psub.add_parser("librispeech", help="prepare LibriSpeech under ROOT/LibriSpeech")
    ls.add_argument("--root", required=True, help="directory holding (or receiving) LibriSpeech/")
    ls.add_argument("--download", action="store_true", help="download missing parts from openslr.org")
    ls.add_argument("--parts", nargs="*", help="splits to prepare (default: every one present)")
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
    e.add_argument("--checkpoint", default="best", help="best | last")
    e.add_argument("--max-utts", type=int, default=0, help="decode only the first N utterances")
    e.set_defaults(func=_cmd_eval)

    a = sub.add_parser("align", help="store the Viterbi alignments of a CTC run (the Imputer's expert)")
    a.add_argument("run_dir")
    a.add_argument("--split", action="append", help="split to align (repeatable; default: the run's training splits)")
    a.add_argument("--device", default="cuda" if _cuda() else "cpu")
    a.set_defaults(func=_cmd_align)

    c = sub.add_parser("compare", help="markdown table of runs' results")
    c.add_argument("run_dirs", nargs="+")
    c.add_argument("--split", help="only this split")
    c.add_argument("--out", help="write FILE.md / FILE.csv (no suffix: both)")
    c.set_defaults(func=_cmd_compare)

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
    os.environ.setdefault("WANDB_MODE", "offline")
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
    if "lightning" in sys.modules or "asr_zoo.objectives" in sys.modules:
        from .objectives.base import TrainingDiverged

        expected += (TrainingDiverged,)
    return isinstance(e, expected)

if __name__ == "__main__":
    sys.exit(main())
