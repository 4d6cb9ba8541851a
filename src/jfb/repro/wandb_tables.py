"""Log a build's tables and figures to W&B as one run of job type "tables" in the group ``reproduce-<profile>``, in
the trainer's mode (:func:`jfb.training.tracking.default_mode`); any failure is one line, never an error."""
from __future__ import annotations

from pathlib import Path

from ..training.tracking import default_mode
from . import config
from .tables import _text


def log_build(built, profile: str, seeds: tuple[int, ...], out_dir: Path) -> str:
    """Log ``built`` (a :class:`jfb.repro.tables.Built`); returns the line to print."""
    try:
        import wandb
    except ImportError as e:
        return f"W&B: not logged ({e})"
    settings = config.resolved(["logger=wandb"])["logger"]
    mode = default_mode(settings.get("mode"))
    if mode == "disabled":
        return "W&B: disabled (WANDB_MODE=disabled); tables not logged"
    group = f"reproduce-{profile}"
    kwargs = dict(project=settings.get("project"), entity=settings.get("entity"), group=group,
                  job_type="tables", name=f"tables-{profile}", dir=str(out_dir),
                  config={"profile": profile, "seeds": list(seeds)}, reinit="finish_previous")
    timeout = settings.get("init_timeout")
    try:
        try:
            online = {"init_timeout": float(timeout)} if timeout and mode == "online" else {}
            run = wandb.init(mode=mode, settings=wandb.Settings(silent=not settings.get("verbose"), **online), **kwargs)
        except Exception:
            if mode != "online":
                raise
            mode = "offline"  # as the trainer does: an unreachable server costs the timeout, then offline
            wandb.teardown()
            run = wandb.init(mode=mode, settings=wandb.Settings(silent=not settings.get("verbose")), **kwargs)
        data = {t.name: wandb.Table(columns=[c.title for c in t.cols],
                                    data=[[_text(row.get(c.key, "")) for c in t.cols] for row in t.cells()])
                for t in built.tables}
        data.update({name: wandb.Image(str(path)) for name, path in built.figures.items()})
        run.log(data)
        run.finish()
        wandb.teardown()  # the service writes the run file after finish() returns; its shutdown waits for it
    except Exception as e:  # noqa: BLE001 - never fail the reproduction for the dashboard
        return f"W&B: tables not logged ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    where = f"offline in {out_dir / 'wandb'} (`wandb sync` uploads it)" if mode == "offline" else "online"
    return f"W&B: {len(built.tables)} tables and {len(built.figures)} figures logged {where}, group {group}"
