"""metrics.jsonl: the file, the record of one (possibly partial) epoch, and the callback that appends it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from rdkit_ae.files import atomic_write_bytes, json_safe
from rdkit_ae.training import distributed as dist
from rdkit_ae.training.callbacks import Callback
from rdkit_ae.training.context import TrainContext

METRICS = "metrics.jsonl"


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, one line per (possibly partial) epoch."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a crash: everything before it is good
        return out

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")

    def keep(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Rewrite the file with only the records ``predicate`` accepts (a resumed run drops what it redoes)."""
        kept = [r for r in self.read() if predicate(r)]
        text = "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in kept)
        atomic_write_bytes(self.path, lambda f: f.write(text.encode("utf-8")))
        return kept


def epoch_record(ctx: TrainContext, complete: bool, train_time: float, images: int, elapsed: float) -> dict[str, Any]:
    """The metrics.jsonl line of the epoch just trained and validated (collective: sums the ranks' losses)."""
    p = ctx.position
    acc = dist.all_reduce(p.acc.detach().clone()).tolist() if p.acc is not None else [math.nan] * len(ctx.term_names)
    steps = max(1, p.batch * ctx.info.world_size)
    rec: dict[str, Any] = {
        "epoch": p.epoch + 1,
        "partial": not complete,
        "epoch_progress": p.epoch + min(1.0, p.batch / max(1, ctx.steps_per_epoch)),
        "step": p.step,
        "lr": ctx.schedule.lr,
    }
    rec.update({f"train_{n}": v / steps for n, v in zip(ctx.term_names, acc)})
    rec.update(ctx.val_metrics or {})
    rec["images_per_s"] = images / train_time if train_time > 0 else None
    rec["epoch_time_s"] = train_time
    rec["time_s"] = elapsed
    return rec


class MetricsLogger(Callback):
    """Appends each epoch's record to metrics.jsonl (rank 0); a resumed run first drops the lines it redoes."""

    builtin = True

    def __init__(self, path: Path):
        self.log = MetricsLog(path)

    def on_train_start(self, ctx: TrainContext) -> None:
        if not ctx.info.is_main:
            return
        epoch = ctx.epoch
        if ctx.resumed:
            self.log.keep(lambda r: not r.get("partial") and int(r.get("epoch", 0)) <= epoch)
        else:
            self.log.keep(lambda r: False)

    def on_epoch_end(self, ctx: TrainContext) -> None:
        if ctx.info.is_main and ctx.record is not None:
            self.log.append(ctx.record)
