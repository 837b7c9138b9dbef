"""wandb: which mode a run's logger is in, and the comparison table as a wandb Table."""

from __future__ import annotations

import os

__all__ = ["wandb_mode", "log_table"]


def wandb_mode(setting: str, environ=os.environ) -> str:
    """The mode of a run's wandb logger for ``trainer.wandb`` = ``setting``: ``disabled`` and
    ``offline`` are what they say; ``online`` is online unless the user's own ``WANDB_MODE``
    says otherwise (nothing in asr-zoo sets that variable).

    >>> wandb_mode("online", {}), wandb_mode("offline", {}), wandb_mode("online", {"WANDB_MODE": "offline"})
    ('online', 'offline', 'offline')
    """
    if setting in ("disabled", "offline"):
        return setting
    return environ.get("WANDB_MODE") or "online"


def log_table(groups: list[dict], columns: list[str], project: str = "asr-zoo") -> None:
    """Log the configurations table to a wandb run (job_type=compare) as ``compare/table``."""
    import wandb

    run = wandb.init(project=project, job_type="compare", mode=wandb_mode("online"))
    run.log({"compare/table": wandb.Table(columns=columns, data=[[str(g.get(c, "")) for c in columns]
                                                                  for g in groups])})
    run.finish()
