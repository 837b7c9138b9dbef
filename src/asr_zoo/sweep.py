"""``asr-zoo sweep SWEEP.yaml``: one wandb sweep YAML, run online by wandb agents or offline by Optuna.

The YAML is wandb's (``method`` grid/random/bayes, ``parameters`` with ``values`` / ``value`` /
distributions, ``metric``, ``early_terminate: {type: hyperband, min_iter, eta}``, ``command``).

* Online (``--online``, or a wandb API key in ``WANDB_API_KEY`` / ``~/.netrc``): ``wandb.sweep``
  creates the sweep and ``K`` ``wandb agent`` processes run it; wandb chooses, the runs report.
* Offline (the default otherwise): an Optuna study stored in ``SWEEP_DIR/study.db`` (or any
  ``--storage`` URL, e.g. PostgreSQL, so workers on many machines share one study) picks the
  parameters: GridSampler / RandomSampler / TPESampler, HyperbandPruner for ``early_terminate``.

Each offline trial is an ``asr-zoo train <command overrides> key=value ...`` subprocess followed
by ``asr-zoo eval RUN --split dev`` (choose on dev, never on test); its value is the metric:
``val/wer`` = ``best_val_wer`` of ``train_summary.json``, ``<split>/<key>`` = that field of
``results/<split>.json``. Rerunning the same command is a resume: finished runs are skipped by
train itself ("already finished"), trials that crashed or were killed are retried with the same
parameters (same run_dir, so training continues from ``last.ckpt``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import netrc
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import ConfigError
from .utils import atomic_write_json, read_json

__all__ = ["load_sweep", "search_space", "grid_size", "trial_overrides", "objective_value", "use_online",
           "run_sweep"]


def load_sweep(path: Path) -> dict:
    spec = yaml.safe_load(Path(path).read_text())
    if not isinstance(spec, dict) or "parameters" not in spec or "command" not in spec:
        raise ConfigError(f"{path}: a sweep YAML needs `parameters` and `command`")
    spec.setdefault("method", "grid")
    spec.setdefault("metric", {"name": "val/wer", "goal": "minimize"})
    if spec["method"] not in ("grid", "random", "bayes"):
        raise ConfigError(f"{path}: method {spec['method']!r} (grid | random | bayes)")
    return spec


def search_space(parameters: dict) -> dict:
    """wandb ``parameters`` -> ``{name: list of values | optuna distribution}``.

    >>> s = search_space({"a": {"values": [1, 2]}, "b": {"value": "x"}, "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}})
    >>> s["a"], s["b"], type(s["lr"]).__name__, s["lr"].log
    ([1, 2], ['x'], 'FloatDistribution', True)
    """
    from optuna.distributions import FloatDistribution, IntDistribution

    space = {}
    for name, p in parameters.items():
        dist = p.get("distribution")
        if "values" in p:
            space[name] = list(p["values"])
        elif "value" in p:
            space[name] = [p["value"]]
        elif dist in ("uniform", None) and isinstance(p.get("min"), float) or dist == "uniform":
            space[name] = FloatDistribution(p["min"], p["max"])
        elif dist in ("int_uniform", None) and isinstance(p.get("min"), int):
            space[name] = IntDistribution(p["min"], p["max"])
        elif dist == "log_uniform_values":
            space[name] = FloatDistribution(p["min"], p["max"], log=True)
        elif dist == "q_uniform":
            space[name] = FloatDistribution(p["min"], p["max"], step=p.get("q", 1.0))
        else:
            raise ConfigError(f"sweep parameter {name}: unsupported {p} (values, value, uniform, int_uniform, "
                             "log_uniform_values, q_uniform)")
    return space


def grid_size(space: dict) -> int:
    """Number of grid points (every parameter must be a list of values)."""
    n = 1
    for name, v in space.items():
        if not isinstance(v, list):
            raise ConfigError(f"method: grid needs `values` for every parameter ({name} is a distribution)")
        n *= len(v)
    return n


def trial_id(params: dict) -> str:
    """Short stable hash of the parameters (``{id}`` in run_dir): same parameters, same run dir."""
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]


def trial_overrides(command: list[str], params: dict, threads: int = 0) -> list[str]:
    """The ``asr-zoo train`` overrides of one trial: the YAML command's own ``key=value`` items
    (``{name}`` / ``{id}`` in them filled from the parameters; ``{objective}`` etc. are left to
    train's run_dir resolution), then ``key=value`` per parameter (wandb's ``${args_no_hyphens}``).

    >>> trial_overrides(["${env}", "asr-zoo", "train", "run_dir=runs/{objective}-{optim.lr}", "${args_no_hyphens}"],
    ...                 {"objective": "ctc", "optim.lr": 0.001}, threads=1)
    ['run_dir=runs/ctc-0.001', 'objective=ctc', 'optim.lr=0.001', 'trainer.num_threads=1']
    """
    fill = {**{k: str(v) for k, v in params.items()}, "id": trial_id(params)}
    out = []
    for item in command:
        if item in ("${env}", "${interpreter}", "${program}", "asr-zoo", "train"):
            continue
        if item == "${args_no_hyphens}":
            out += [f"{k}={v}" for k, v in params.items()]
        elif item.startswith("${"):
            raise ConfigError(f"sweep command: {item} is not supported offline (use ${{args_no_hyphens}})")
        else:
            out.append(re.sub(r"\{([^{}]+)\}", lambda m: fill.get(m.group(1), m.group(0)), item))
    if threads:
        out.append(f"trainer.num_threads={threads}")
    return out


def objective_value(run_dir: Path, metric: str) -> float:
    """``val/wer`` -> ``train_summary.json`` best_val_wer; ``<split>/<key>`` -> ``results/<split>.json``."""
    run_dir = Path(run_dir)
    if metric == "val/wer":
        value = read_json(run_dir / "train_summary.json").get("best_val_wer")
    else:
        split, key = metric.split("/", 1)
        value = read_json(run_dir / "results" / f"{split}.json")[key]
    if value is None:
        raise ValueError(f"{run_dir}: no {metric}")
    return float(value)


def use_online(online: bool | None, environ=os.environ, netrc_file: Path | None = None) -> bool:
    """Online when asked (``--online`` / ``--offline``), else when a wandb API key is present.

    >>> use_online(None, {}, Path("/nonexistent")), use_online(None, {"WANDB_API_KEY": "k"}), use_online(False, {"WANDB_API_KEY": "k"})
    (False, True, False)
    """
    if online is not None:
        return online
    if environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(str(netrc_file) if netrc_file else None).authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


# -- offline: Optuna --------------------------------------------------------------------------

class TrialFailed(RuntimeError):
    pass


def _cli() -> list[str]:
    return [sys.executable, "-m", "asr_zoo.cli"]


def _val_wers(run_dir: Path) -> list[float]:
    """The ``val/wer`` values logged so far (``logs/metrics.csv``), in order."""
    path = run_dir / "logs" / "metrics.csv"
    try:
        with open(path, newline="") as f:
            return [float(r["val/wer"]) for r in csv.DictReader(f) if r.get("val/wer")]
    except (OSError, ValueError, KeyError):
        return []


@dataclass
class Worker:
    index: int
    threads: int
    device: str | None

    def env(self) -> dict:
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads),
                   PYTHONUNBUFFERED="1")
        env.setdefault("WANDB_MODE", "offline")
        if self.device is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.device
        return env


class Progress:
    """One line per trial event, with totals: done / running / failed and the best so far."""

    def __init__(self, total: int, goal: str, log_path: Path):
        self.total, self.goal, self.log_path = total, goal, log_path
        self.lock = threading.Lock()
        self.running: set[int] = set()

    def line(self, study, event: str) -> None:
        from optuna.trial import TrialState

        with self.lock:
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
            failed = sum(t.state == TrialState.FAIL for t in trials)
            complete = [t for t in trials if t.state == TrialState.COMPLETE]
            best = ""
            if complete:
                b = (min if self.goal == "minimize" else max)(complete, key=lambda t: t.value)
                best = f" | best {b.value:.2f} ({b.user_attrs.get('run_dir', b.number)})"
            msg = (f"[sweep {done}/{self.total} done, {len(self.running)} running, {failed} failed{best}] "
                   f"{event}")
            print(msg, flush=True)
            with open(self.log_path, "a") as f:
                f.write(json.dumps({"time": round(time.time(), 1), "event": event}) + "\n")


_LIVE: set[subprocess.Popen] = set()  # trial subprocesses now running (for the signal handler)
_STOPPING = threading.Event()  # set by the handler: no new subprocess starts


def _stop_trials_on(signum, frame) -> None:
    """SIGTERM/SIGHUP (``kill``, ``scancel``, a closed terminal) to the sweep: stop its trainers too.

    Trials run in worker threads, whose ``finally`` blocks do not run when the process is
    terminated; without this the trainers would keep running as orphans. The killed trials are
    resumed by the next ``asr-zoo sweep`` from their last checkpoint.
    """
    _STOPPING.set()
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.terminate()
    for proc in list(_LIVE):
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    raise SystemExit(128 + signum)


def _run_logged(cmd: list[str], env: dict, log: Path, poll=None) -> int:
    """Run ``cmd`` with stdout+stderr appended to ``log``; ``poll()`` every 2 s may return True to stop it."""
    if _STOPPING.is_set():
        return -signal.SIGTERM
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        _LIVE.add(proc)
        try:
            while proc.poll() is None:
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    if poll is not None and poll():
                        proc.terminate()
                        proc.wait()
                        return -1
            return proc.returncode
        finally:
            if proc.poll() is None:  # our own failure or interrupt: never leave a trainer behind
                proc.kill()
                proc.wait()
            _LIVE.discard(proc)


def _sampler(method: str, space: dict, seed: int):
    import optuna

    if method == "grid":
        grid_size(space)
        return optuna.samplers.GridSampler(space, seed=seed)
    if method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(early_terminate: dict | None):
    import optuna

    if not early_terminate:
        return optuna.pruners.NopPruner()
    if early_terminate.get("type") != "hyperband":
        raise ConfigError(f"early_terminate: only type hyperband is supported ({early_terminate})")
    return optuna.pruners.HyperbandPruner(min_resource=int(early_terminate.get("min_iter", 1)),
                                          reduction_factor=int(early_terminate.get("eta", 3)))


def _suggest(trial, space: dict) -> dict:
    from optuna.distributions import FloatDistribution

    params = {}
    for name, v in space.items():
        if isinstance(v, list):
            params[name] = trial.suggest_categorical(name, v)
        elif isinstance(v, FloatDistribution):
            params[name] = trial.suggest_float(name, v.low, v.high, log=v.log, step=v.step)
        else:
            params[name] = trial.suggest_int(name, v.low, v.high)
    return params


def _retry_unfinished(study, reset_running: bool) -> int:
    """Mark trials left RUNNING by a killed sweep as failed (``reset_running``), then enqueue
    every failed trial's parameters once more unless they finished since; returns how many."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if reset_running:
        for t in trials:
            if t.state == TrialState.RUNNING:
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        trials = study.get_trials(deepcopy=False)
    key = lambda t: json.dumps(t.params, sort_keys=True)  # noqa: E731
    settled = {key(t) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING,
                                                     TrialState.RUNNING)}
    n = 0
    for t in trials:
        if t.state == TrialState.FAIL and t.params and key(t) not in settled:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            retry = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[-1]
            for k in ("grid_id", "search_space"):  # GridSampler bookkeeping: the retry is that grid point
                if k in t.system_attrs:
                    study._storage.set_trial_system_attr(retry._trial_id, k, t.system_attrs[k])
            settled.add(key(t))
            n += 1
    return n


def run_offline(spec: dict, sweep_dir: Path, count: int | None, workers: int, threads: int,
                devices: list[str] | None, storage: str | None, eval_split: str | None, seed: int = 0) -> dict:
    import optuna
    from optuna.trial import TrialState

    from .config import compose
    from .train import resolve_run_dir

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _stop_trials_on)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "logs").mkdir(exist_ok=True)
    local = storage is None
    storage = storage or f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    space = search_space(spec["parameters"])
    method = spec["method"]
    total = count or spec.get("run_cap") or (grid_size(space) if method == "grid" else None)
    if not total:
        raise ConfigError(f"method: {method} needs --count N (or run_cap in the YAML)")
    metric = spec["metric"]["name"]
    goal = spec["metric"].get("goal", "minimize")
    study = optuna.create_study(study_name=spec.get("name", sweep_dir.name), storage=storage,
                                sampler=_sampler(method, space, seed), pruner=_pruner(spec.get("early_terminate")),
                                direction="minimize" if goal == "minimize" else "maximize", load_if_exists=True)
    retried = _retry_unfinished(study, reset_running=local)
    progress = Progress(total, goal, sweep_dir / "progress.jsonl")
    slots: queue.Queue = queue.Queue()
    for i in range(workers):
        slots.put(Worker(i, threads, devices[i % len(devices)] if devices else None))
    pruning = bool(spec.get("early_terminate"))

    def objective(trial) -> float:
        params = _suggest(trial, space)
        overrides = trial_overrides(spec["command"], params, threads)
        run_dir = resolve_run_dir(compose(overrides))
        trial.set_user_attr("run_dir", str(run_dir))
        worker = slots.get()
        progress.running.add(trial.number)
        log = sweep_dir / "logs" / f"trial-{trial.number:04d}.log"
        try:
            progress.line(study, f"trial {trial.number} started: {run_dir} (worker {worker.index})")
            reported = [0]

            def poll() -> bool:
                values = _val_wers(run_dir)
                for i in range(reported[0], len(values)):
                    trial.report(values[i], i + 1)  # wandb's hyperband counts logged values
                reported[0] = len(values)
                return pruning and bool(values) and trial.should_prune()

            rc = _run_logged([*_cli(), "train", *overrides], worker.env(), log, poll)
            if rc == -1:
                raise optuna.TrialPruned(f"pruned after {reported[0]} validations")
            if rc != 0:
                raise TrialFailed(f"train exited {rc} (see {log})")
            if eval_split and not (run_dir / "results" / f"{eval_split}.json").exists():
                rc = _run_logged([*_cli(), "eval", str(run_dir), "--split", eval_split, "--device",
                                  "cuda" if worker.device is not None else "cpu"], worker.env(), log)
                if rc != 0:
                    raise TrialFailed(f"eval exited {rc} (see {log})")
            try:
                return objective_value(run_dir, metric)
            except (OSError, KeyError, ValueError) as e:
                raise TrialFailed(f"{run_dir}: no {metric} ({e})") from e
        finally:
            progress.running.discard(trial.number)
            slots.put(worker)

    def finished(study, trial) -> None:
        what = {TrialState.COMPLETE: f"done {metric}={trial.value:.2f}" if trial.value is not None else "done",
                TrialState.PRUNED: "pruned", TrialState.FAIL: "FAILED"}.get(trial.state, trial.state.name)
        progress.line(study, f"trial {trial.number} {what}: {trial.user_attrs.get('run_dir', '')}")

    if retried:
        print(f"[sweep] retrying {retried} unfinished trial(s) (crashed runs resume from last.ckpt)")
    while True:
        trials = study.get_trials(deepcopy=False)
        settled = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        n = max(0, total - settled - waiting) + waiting
        if method == "grid":
            n = min(n, max(0, grid_size(space) - settled))
        if n == 0:
            break
        study.optimize(objective, n_trials=n, n_jobs=workers, catch=(TrialFailed,), callbacks=[finished],
                       gc_after_trial=False)
        after = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))
        if after == settled:  # nothing more finished: failures stay failed until the next rerun
            break
    summary = _summary(study, metric)
    atomic_write_json(sweep_dir / "summary.json", summary)
    print(f"[sweep] {summary['complete']} complete, {summary['pruned']} pruned, {summary['failed']} failed; "
          f"best {metric}: {summary['best']}; {sweep_dir / 'summary.json'}")
    return summary


def _summary(study, metric: str) -> dict:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    best = None
    try:
        best = {"value": study.best_value, "params": study.best_params,
                "run_dir": study.best_trial.user_attrs.get("run_dir")}
    except ValueError:
        pass
    return {"metric": metric, "best": best,
            "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "failed": len({json.dumps(t.params, sort_keys=True) for t in trials if t.state == TrialState.FAIL}
                          - {json.dumps(t.params, sort_keys=True) for t in trials
                             if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}),
            "trials": [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                        "run_dir": t.user_attrs.get("run_dir")} for t in trials]}


# -- online: wandb agents ---------------------------------------------------------------------

def run_online(spec: dict, count: int | None, workers: int, threads: int, devices: list[str] | None,
               project: str) -> int:
    """``wandb.sweep`` + ``workers`` ``wandb agent`` processes (each ``count`` runs at most)."""
    import wandb

    spec = {**spec, "command": [c for c in spec["command"] if not c.startswith("trainer.wandb=")] +
            ["trainer.wandb=online"]}
    sweep_id = wandb.sweep(spec, project=project)
    print(f"[sweep] wandb sweep {sweep_id} (project {project}); {workers} agent(s)")
    procs = []
    for i in range(workers):
        w = Worker(i, threads, devices[i % len(devices)] if devices else None)
        env = {**w.env(), "WANDB_MODE": "online"}
        cmd = ["wandb", "agent", *(["--count", str(count)] if count else []), f"{project}/{sweep_id}"]
        procs.append(subprocess.Popen(cmd, env=env))
    return max(p.wait() for p in procs)


def run_sweep(path: Path, count: int | None = None, workers: int = 1, threads: int = 0,
              devices: list[str] | None = None, online: bool | None = None, sweep_dir: Path | None = None,
              storage: str | None = None, eval_split: str | None = "dev", project: str = "asr-zoo") -> int:
    spec = load_sweep(path)
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    if use_online(online):
        return run_online(spec, count, workers, threads, devices, project)
    sweep_dir = Path(sweep_dir or Path("runs") / "sweeps" / Path(path).stem)
    summary = run_offline(spec, sweep_dir, count, workers, threads, devices, storage, eval_split)
    return 0 if summary["failed"] == 0 else 1
