"""Tracking: metrics.csv always, TensorBoard by default, W&B on request; progress bars for terminals."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from dla.config import TrackingConfig
from dla.errors import ConfigError, RunDirError

T = TypeVar("T")

COLUMNS = ["epoch", "split", "loss", "accuracy", "precision", "recall", "f1", "top5", "lr", "time"]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.csv as a list of rows with numbers parsed (empty cells become None)."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [_parse_row(row) for row in rows]
    except (OSError, ValueError, TypeError, csv.Error) as exc:  # edited by hand, or by someone hostile
        raise RunDirError(f"cannot read {path}: {' '.join(str(exc).split())[:200]}; is it a metrics.csv "
                          "written by dla?") from None


def metrics_at(rows: list[dict[str, Any]], split: str, epoch: int) -> dict[str, Any]:
    """The metrics one split logged at one epoch (or LM step), bookkeeping columns left out; {} if none."""
    row = next((r for r in rows if r["split"] == split and r["epoch"] == epoch), {})
    return {k: v for k, v in row.items() if k not in ("epoch", "split", "lr", "time", "seconds") and v is not None}


def _parse_row(row: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for k, v in row.items():
        if k is None:  # cells beyond the header's columns
            continue
        if k == "split":
            parsed[k] = v
        elif k == "epoch":
            parsed[k] = int(v)
        else:  # a row cut short by a crash mid-append has None for its missing cells
            parsed[k] = float(v) if v not in ("", None) else None
    return parsed


class Tracker:
    def __init__(self, run_dir: Path, cfg: TrackingConfig, config: dict[str, Any], start_epoch: int = 0,
                 run_name: str = "") -> None:
        self.cfg = cfg
        self.csv_path = run_dir / "metrics.csv"
        self._truncate_after(start_epoch)
        self.tb = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a previous attempt wrote after the checkpoint we resume from.
            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_epoch + 1 if start_epoch else None)
        self.wandb = None
        if cfg.wandb:
            check_tracking(cfg)
            import wandb

            self.wandb = wandb.init(project=cfg.wandb_project, name=run_name, config=config, dir=str(run_dir),
                                    resume="allow")

    def _truncate_after(self, start_epoch: int) -> None:
        """On resume, keep only the rows of epochs the checkpoint already covers."""
        rows = [r for r in _raw_rows(self.csv_path) if int(r["epoch"]) <= start_epoch]
        with open(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(rows)

    def log(self, epoch: int, split: str, metrics: dict[str, float], lr: float | None = None,
            seconds: float | None = None) -> None:
        row = {"epoch": epoch, "split": split, "lr": lr, "time": seconds,
               **{k: metrics.get(k) for k in COLUMNS[2:8]}}
        with open(self.csv_path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=COLUMNS).writerow({k: _cell(row.get(k)) for k in COLUMNS})
        scalars = {f"{split}/{k}": v for k, v in metrics.items() if v is not None}
        if lr is not None and split == "train":
            scalars["train/lr"] = lr
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, epoch)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log({**scalars, "epoch": epoch})

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


class NullTracker:
    """What ranks other than 0 log to: nothing."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def check_tracking(cfg: TrackingConfig) -> None:
    """Fail before a run folder exists when a requested tracker is not installed."""
    if cfg.wandb:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("tracking.wandb=true needs the wandb package: pip install -e '.[wandb]'")


def _raw_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "", mode: str = "auto",
             leave: bool = False) -> Iterator[T]:
    """A tqdm bar with ETA in a terminal; silent when stderr is not one (CI logs) unless mode='on'."""
    disable = mode == "off" or (mode == "auto" and not sys.stderr.isatty())
    if disable:
        yield from iterable
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, total=total, desc=desc, leave=leave, dynamic_ncols=True)
