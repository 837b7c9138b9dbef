"""``pareto.png``: WER vs latency p50 and WER vs training time, one point per configuration
(mean over seeds, error bars = std), labelled objective/attention, Pareto frontier drawn."""

from __future__ import annotations

from pathlib import Path

from ..utils import atomic_replace

__all__ = ["pareto_front", "plot_pareto"]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (both minimised), by x.

    >>> pareto_front([(1, 5), (2, 3), (3, 4), (4, 1), (2, 6)])
    [0, 1, 3]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best_y = [], float("inf")
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def plot_pareto(groups: list[dict], out: Path) -> Path | None:
    """Two panels from grouped rows (``label``, ``wer``, ``wer_std`` and x columns with ``_std``).
    Returns the path, or None when no row has the numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("latency_ms_p50", "latency p50 per utterance (ms)"), ("train_time_s", "training time (s)")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    drawn = False
    for ax, (x, xlabel) in zip(axes, panels):
        rows = [g for g in groups if isinstance(g.get(x), (int, float)) and isinstance(g.get("wer"), (int, float))]
        for g in rows:
            ax.errorbar(g[x], g["wer"], xerr=g.get(f"{x}_std") or 0, yerr=g.get("wer_std") or 0, fmt="o", capsize=3)
            ax.annotate(f"{g['label']} (n={g['n']})", (g[x], g["wer"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
        if rows:
            drawn = True
            front = [rows[i] for i in pareto_front([(g[x], g["wer"]) for g in rows])]
            ax.step([g[x] for g in front], [g["wer"] for g in front], where="post", color="gray", ls="--",
                    label="Pareto frontier")
            ax.legend(fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("WER (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    if drawn:
        out = Path(out)
        atomic_replace(out, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return out if drawn else None
