"""``asr-zoo compare``: runs -> rows (one per results file) -> groups (runs differing only in
``seed``: mean, std, n) -> optional paired significance against a baseline -> tables and plot."""

from __future__ import annotations

import csv
import io
import statistics
import sys
from collections import Counter
from pathlib import Path

import yaml

from ..utils import atomic_write_text, read_json

__all__ = ["find_runs", "collect_rows", "group_rows", "add_significance", "markdown_table", "csv_table",
           "write_report", "report_paths", "COLUMNS", "GROUP_COLUMNS"]

COLUMNS = ["run", "objective", "attention", "params", "split", "num_utts", "wer", "sub", "del", "ins", "cer",
           "decode_steps", "latency_ms_p50", "latency_ms_p90", "rtf", "time_per_epoch_s", "device"]
GROUP_COLUMNS = ["label", "split", "n", "wer", "sub", "del", "ins", "cer", "latency_ms_p50", "train_time_s", "params",
                 "d_wer", "ci95", "p"]
MEAN_KEYS = ("wer", "sub", "del", "ins", "cer", "latency_ms_p50", "latency_ms_p90", "rtf", "train_time_s",
             "time_per_epoch_s", "decode_steps")


def find_runs(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Run directories among ``paths`` (config.yaml + results/*.json) and, for the rest, why not."""
    runs, skipped = [], []
    for p in map(Path, paths):
        if not p.is_dir() or not (p / "config.yaml").exists():
            skipped.append(f"{p}: not a run directory")
        elif not list((p / "results").glob("*.json")):
            skipped.append(f"{p}: no results/*.json (run `asr-zoo eval {p}` first)")
        else:
            runs.append(p)
    return runs, skipped


def collect_rows(run_dirs: list[Path], split: str | None = None) -> list[dict]:
    """One row per results file of every run (optionally one split): results + training time,
    the run's seed and its config with ``seed`` and result-neutral keys left out (``group_key``)."""
    from omegaconf import OmegaConf

    from ..config import RESULT_NEUTRAL_KEYS, flatten
    from ..data.splits import split_names

    rows = []
    for run in map(Path, run_dirs):
        summary = read_json(run / "train_summary.json") if (run / "train_summary.json").exists() else {}
        raw = yaml.safe_load((run / "config.yaml").read_text()) or {}
        wanted = split_names(OmegaConf.create(raw["data"]), split) if split else None  # roles: train/dev/test
        cfg = _config_with_defaults(run, raw)
        seed = cfg.pop("seed", None)
        cfg = {k: v for k, v in cfg.items() if not k.startswith(RESULT_NEUTRAL_KEYS) and k != "data.root"}
        if cfg.get("objective.expert"):  # the expert by its configuration, not its path: the runs of
            cfg["objective.expert"] = _expert_key(run, raw)  # one config, each from its seed's expert, group
        for f in sorted((run / "results").glob("*.json")):
            r = read_json(f)
            if wanted and r["split"] not in wanted:
                continue
            if "sub" not in r:  # results written before error types: score the stored hypotheses
                r |= _error_types_from_hyps(f.parent / f"{f.stem}.hyps.tsv")
            tag = f.stem
            name = run.name + (tag[len(r["split"]):] if tag != r["split"] else "")
            rows.append({"run": name, **r, "run_dir": str(run), "tag": tag, "seed": seed, "config": cfg,
                         "time_per_epoch_s": summary.get("time_per_epoch_s", ""),
                         "train_time_s": _chain_train_time(run, summary, raw)})
    return rows


def _config_with_defaults(run: Path, raw: dict) -> dict:
    """The run's flattened config with every key its schemas know, so that a run saved before a
    key existed compares equal to one saved with that key at its default; the saved keys as they
    are when the config no longer validates."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..config import ConfigError, flatten, load_config

    try:
        return flatten(OmegaConf.to_container(load_config(run / "config.yaml"), resolve=False))
    except (ConfigError, OmegaConfBaseException, KeyError):  # not a complete config of this version
        return flatten(raw)


def _find_expert(run: Path, raw: dict) -> Path | None:
    """The run dir of ``raw``'s ``objective.expert`` (placeholders filled; as saved, i.e. relative
    to the working directory, or next to ``run``), or None."""
    from omegaconf import OmegaConf

    from ..config import fill_placeholders

    expert = ((raw.get("objective") or {}).get("expert") or "") if isinstance(raw, dict) else ""
    if not expert:
        return None
    expert = fill_placeholders(expert, OmegaConf.create(raw))  # runs/ctc-s{seed}
    for cand in (Path(expert), run.parent / Path(expert).name):
        if (cand / "config.yaml").exists():
            return cand
    return None


def _expert_key(run: Path, raw: dict) -> str:
    """The expert's configuration without its seed, run paths and result-neutral keys (a short
    digest), or its path as saved when the expert run is not found."""
    import hashlib

    from ..config import RESULT_NEUTRAL_KEYS, flatten

    found = _find_expert(run, raw)
    if found is None:
        return str(raw["objective"]["expert"])
    cfg = _config_with_defaults(found, yaml.safe_load((found / "config.yaml").read_text()) or {})
    cfg = {k: v for k, v in cfg.items() if k != "seed" and k != "data.root" and not k.startswith(RESULT_NEUTRAL_KEYS)}
    if cfg.get("objective.expert"):
        cfg["objective.expert"] = _expert_key(found, yaml.safe_load((found / "config.yaml").read_text()))
    return "expert config " + hashlib.sha1(repr(sorted(cfg.items())).encode()).hexdigest()[:8]


def _chain_train_time(run: Path, summary: dict, raw: dict, depth: int = 0) -> float | str:
    """Training seconds of ``run`` plus those of its expert chain (an Imputer's cost includes the
    CTC model it was aligned with and started from); '' when this run's time is unknown. An
    expert that cannot be found (:func:`_find_expert`) adds nothing."""
    own = summary.get("train_time_s", "")
    found = _find_expert(run, raw) if own != "" and depth <= 8 else None
    if found is None or not (found / "train_summary.json").exists():
        return own
    before = _chain_train_time(found, read_json(found / "train_summary.json"),
                               yaml.safe_load((found / "config.yaml").read_text()) or {}, depth + 1)
    return round(own + before, 1) if before != "" else own


def _error_types_from_hyps(path: Path) -> dict:
    """Error-type rates (``sub``, ``del``, ``ins``, ...) of a ``<tag>.hyps.tsv``; {} if it is missing."""
    from .metrics import error_type_rates

    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return error_type_rates([r["reference"] or "" for r in rows], [r["hypothesis"] or "" for r in rows])


def _non_modal_keys(group: dict, same: list[dict]) -> set[str]:
    """Keys in which ``group`` differs from a same-named group and does not hold the value most of them
    share (a tie counts as not shared: the key is shown in every group)."""
    cfg = group["config"]
    shown = set()
    for k in (k for k in cfg if any(o["config"].get(k) != cfg[k] for o in same)):
        top = Counter(repr(c["config"].get(k)) for c in [group, *same]).most_common(2)
        if repr(cfg[k]) != top[0][0] or (len(top) > 1 and top[0][1] == top[1][1]):
            shown.add(k)
    return shown


def label_groups(groups: list[dict]) -> None:
    """Set each group's ``label``: objective/attention, plus the config keys where it departs from what
    most same-named groups share (all of them: the baseline of an ablation stays bare); two groups
    still not told apart both show the first key in which they differ; then any evaluation tag."""
    same = {id(g): [o for o in groups if o is not g and (o["objective"], o["attention"]) ==
                    (g["objective"], g["attention"])] for g in groups}
    shown = {id(g): _non_modal_keys(g, same[id(g)]) for g in groups}
    for g in groups:
        for o in same[id(g)]:
            both = shown[id(g)] | shown[id(o)]
            if g["tag"] == o["tag"] and not any(o["config"].get(k) != g["config"].get(k) for k in both):
                k = min(k for k in g["config"].keys() | o["config"].keys() if o["config"].get(k) != g["config"].get(k))
                shown[id(g)].add(k)
                shown[id(o)].add(k)
    for g in groups:
        extra = [f"{k}={g['config'].get(k)}" for k in sorted(shown[id(g)])]
        if g["tag"] != g["split"]:
            extra.append(g["tag"][len(g["split"]):].lstrip("@"))
        g["label"] = f"{g['objective']}/{g['attention']}" + (f" [{' '.join(extra)}]" if extra else "")


def group_rows(rows: list[dict]) -> list[dict]:
    """Runs whose configs differ only in ``seed`` (same results tag): mean, ``<key>_std`` and n."""
    groups: dict[str, dict] = {}
    for r in rows:
        key = repr((sorted(r["config"].items()), r["tag"]))
        g = groups.setdefault(key, {k: r[k] for k in ("objective", "attention", "split", "tag", "params", "config",
                                                      "device")} | {"members": []})
        g["members"].append(r)
    out = list(groups.values())
    for g in out:
        g["n"] = len(g["members"])
        g["runs"] = [m["run_dir"] for m in g["members"]]
        g["seeds"] = [m["seed"] for m in g["members"]]
        for k in MEAN_KEYS:
            vals = [m[k] for m in g["members"] if isinstance(m.get(k), (int, float))]
            if vals:
                g[k] = round(statistics.fmean(vals), 3)
                g[f"{k}_std"] = round(statistics.stdev(vals), 3) if len(vals) > 1 else 0.0
    label_groups(out)
    return out


def _find_baseline(groups: list[dict], baseline: str) -> list[dict]:
    """Groups matching ``baseline``: a group label, a run directory (its group) or a run name."""
    hits = [g for g in groups if g["label"] == baseline]
    hits = hits or [g for g in groups if any(Path(r) == Path(baseline) or Path(r).name == Path(baseline).name
                                            for r in g["runs"])]
    if not hits:
        raise FileNotFoundError(f"--baseline {baseline}: no such run or group (labels: "
                                f"{', '.join(g['label'] for g in groups)})")
    return hits


def add_significance(groups: list[dict], baseline: str, n_resamples: int = 2000) -> None:
    """``d_wer`` (points), ``ci95``, ``p`` and ``significant`` for every group on a baseline's split,
    paired per utterance (each side pooled over its seeds first).

    Each group is compared with the baseline decoded the same way (same split and evaluation-time
    overrides, e.g. ``test@attention=linear`` against the baseline's own ``test@attention=linear``)
    when there is one, else with the baseline's plain decoding of that split: so ``--baseline
    ctc/softmax`` measures what an evaluation-time swap (``asr-zoo eval RUN attention=linear``)
    costs the model it was applied to."""
    from .significance import paired_difference, pool_seeds, utterance_errors

    def errors(g):
        return pool_seeds([utterance_errors(m["run_dir"], m["tag"]) for m in g["members"]])

    bases = _find_baseline(groups, baseline)
    base_errors = {id(base): errors(base) for base in bases}  # read each baseline's files once
    for base in bases:
        base["d_wer"] = "baseline"
    for g in groups:
        if any(g is b for b in bases):
            continue
        same_split = [b for b in bases if b["split"] == g["split"]]
        same_tag = [b for b in same_split if b["tag"] == g["tag"]]
        base = same_tag[0] if same_tag else next((b for b in same_split if b["tag"] == b["split"]), None)
        if base is None:
            continue
        d = paired_difference(errors(g), base_errors[id(base)], n_resamples=n_resamples)
        g["significance"] = d
        g["d_wer"] = f"{d['delta']:+.2f}{' *' if d['significant'] else ''}"
        g["ci95"] = f"[{d['low']:+.2f}, {d['high']:+.2f}]"
        g["p"] = d["p"]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) >= 0.01 or v == 0 else f"{v:.4f}"
    if isinstance(v, int) and v >= 10000:
        return f"{v / 1e6:.2f}M"
    return str(v)


def _cell(r: dict, c: str) -> str:
    v = r.get(c, "")
    std = r.get(f"{c}_std")
    if r.get("n", 1) > 1 and isinstance(v, (int, float)) and isinstance(std, (int, float)):
        return f"{_fmt(float(v))} ± {_fmt(float(std))}"
    return _fmt(v)


def markdown_table(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict], columns: list[str] = COLUMNS) -> str:
    cols = [*columns, *(f"{c}_std" for c in columns if any(f"{c}_std" in r for r in rows))]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def report_paths(out: str) -> tuple[Path, Path, Path]:
    """(table.md, table.csv, pareto.png) for ``--out``: a directory (an existing one, or a path
    ending in ``/``) gets those names inside; any other path P gets P.md, P.csv and P.png.

    >>> [str(p) for p in report_paths("runs/report/")], [str(p) for p in report_paths("runs/t")]
    (['runs/report/table.md', 'runs/report/table.csv', 'runs/report/pareto.png'], ['runs/t.md', 'runs/t.csv', 'runs/t.png'])
    """
    if Path(out).is_dir() or str(out).endswith(("/", "\\")):
        return Path(out) / "table.md", Path(out) / "table.csv", Path(out) / "pareto.png"
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".md", ".csv", ".png") else out
    return stem.with_suffix(".md"), stem.with_suffix(".csv"), stem.with_suffix(".png")


def write_report(groups: list[dict], rows: list[dict], out: str, columns: list[str] = GROUP_COLUMNS) -> list[Path]:
    """table.md (configurations, then runs, then the environment), table.csv (configurations)
    and pareto.png; see :func:`report_paths` for the names."""
    from .environment import environment, environment_block
    from .plot import plot_pareto

    md, csv_path, png = report_paths(out)
    env = environment([g.get("device", "") for g in groups])
    note = ("\nWER in %, mean ± std over seeds (n); sub/del/ins: its substitutions, deletions and insertions in % "
            "of reference words (sum = WER). d_wer: WER minus the baseline's, in points, paired per "
            "utterance; * = its 95% bootstrap CI excludes 0; p: paired permutation test. train_time_s: "
            "training seconds, an Imputer's including its expert's.\n")
    atomic_write_text(md, "## Configurations\n\n" + markdown_table(groups, columns) + note + "\n## Runs\n\n"
                      + markdown_table(rows) + "\n## Environment\n\n" + environment_block(env))
    atomic_write_text(csv_path, csv_table(groups, columns))
    png = plot_pareto(groups, png)
    return [md, csv_path] + ([png] if png else [])


def warn_skipped(skipped: list[str]) -> None:
    for s in skipped:
        print(f"compare: skipped {s}", file=sys.stderr)
