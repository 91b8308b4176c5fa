"""Training: ``train(recipe, data)`` optimises a recipe's model and leaves a run folder.

The run folder holds ``recipe.toml`` (resolved), ``last.pt`` and ``best.pt``
(by validation loss; weights, optimiser/schedule state, position, RNG states
and the recipe, all loadable with ``torch.load(weights_only=True)``),
``metrics.jsonl``, ``loss_curves.png``, ``comparison.png``, ``eval.json``
(real bitstreams on the validation split) and ``run.json``.

The plan of a run is its recipe (``[train] epochs``, schedule, ...) and its
data; ``max_steps`` and ``time_budget`` only stop a run early, they never
reshape the plan, so a stopped or interrupted run resumed with ``resume=``
ends exactly where an uninterrupted one would (bit for bit on the CPU with
the same thread count).
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from rdkit_ae.checkpoint import load_checkpoint, save_checkpoint
from rdkit_ae.errors import CheckpointError, RdkitError, RecipeError
from rdkit_ae.files import atomic_write_bytes
from rdkit_ae.recipe import Recipe, load_recipe
from rdkit_ae.training import distributed as dist

SCHEDULE_INTERVALS = ("epoch", "step")
RUNS_DIR = Path("runs")
LAST, BEST = "last.pt", "best.pt"
COMPARISON_IMAGES = 8


class NonFiniteLossError(RdkitError):
    """The loss became NaN or infinite; training stopped without overwriting the last good checkpoint."""


class TrainingInterrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM: a checkpoint was saved and training stopped cleanly.

    ``exit_code`` is 130 for SIGINT and 143 for SIGTERM (128 + signal number).
    """

    def __init__(self, message: str, out_dir: Path, checkpoint: Path | None, signum: int, is_main: bool = True):
        super().__init__(message)
        self.out_dir = out_dir
        self.checkpoint = checkpoint
        self.signum = signum
        self.exit_code = 128 + int(signum)
        self.is_main = is_main  # under torchrun only rank 0 should tell the user


@dataclass
class TrainResult:
    out_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    metrics: list[dict[str, Any]]
    eval: dict[str, Any] | None
    stopped: str = "completed"  # completed, max_steps or time_budget
    epochs: int = 0  # epochs completed
    steps: int = 0  # optimiser steps in total


# -- optimisation ---------------------------------------------------------------
def split_parameters(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """(main, aux) named parameters, as CompressAI's examples/train.py: aux = the EntropyBottleneck quantiles."""
    main, aux = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (aux if name.endswith(".quantiles") else main).append((name, p))
    return main, aux


def build_optimizers(model: nn.Module, train_cfg: Mapping[str, Any], source: str = "recipe"):
    """The recipe's main optimiser over the main parameters, and Adam(aux_lr) over the quantiles (or None)."""
    main, aux = split_parameters(model)
    cfg = train_cfg["optimizer"]
    lr, wd, name = float(cfg["lr"]), float(cfg["weight_decay"]), cfg["name"]
    params = [p for _, p in main]
    if name in ("adam", "adamw"):
        betas = cfg["betas"]
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise RecipeError(f"{source}: [train.optimizer] 'betas' must be two numbers in [0, 1), got {betas!r}")
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        opt = cls(params, lr=lr, betas=(float(betas[0]), float(betas[1])), weight_decay=wd)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=float(cfg["momentum"]), weight_decay=wd)
    aux_opt = torch.optim.Adam([p for _, p in aux], lr=float(train_cfg["aux_lr"])) if aux else None
    return opt, aux_opt


class LRSchedule:
    """Cosine decay (to 0 at the end of the plan) or a constant learning rate.

    ``interval="epoch"`` advances once per epoch (like ``CosineAnnealingLR``
    with ``T_max=epochs``), ``"step"`` once per optimiser step over
    ``epochs * steps_per_epoch``. Only the main optimiser is scheduled.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, interval: str, horizon: int):
        self.optimizer = optimizer
        self.kind, self.interval, self.horizon = kind, interval, max(1, int(horizon))
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.t = 0
        self._apply()

    def factor(self, t: int) -> float:
        if self.kind == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(t, self.horizon) / self.horizon))

    def _apply(self) -> None:
        f = self.factor(self.t)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def step(self) -> None:
        self.t += 1
        self._apply()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "base_lrs": list(self.base_lrs),
            "kind": self.kind,
            "interval": self.interval,
            "horizon": self.horizon,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.t = int(state["t"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self._apply()


class TrainStep:
    """One optimisation step on a batch: forward, weighted loss, backward, clip, step, then the aux step.

    Returns the detached losses ``[total, *terms, (aux)]`` as one tensor and
    never reads a value back to the host, so GPU steps stay asynchronous.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: nn.Module,
        optimizer: torch.optim.Optimizer,
        aux_optimizer: torch.optim.Optimizer | None = None,
        clip_grad: float = 0.0,
        forward: nn.Module | None = None,
    ):
        from compressai.entropy_models import EntropyBottleneck

        self.model, self.objective = model, objective
        self.forward = forward if forward is not None else model
        self.optimizer, self.aux_optimizer = optimizer, aux_optimizer
        self.clip_grad = float(clip_grad)
        main, aux = split_parameters(model)
        self.main_params = [p for _, p in main]
        self.aux_params = [p for _, p in aux]
        # CompressionModel.aux_loss() walks every module each call; the list is fixed.
        self.bottlenecks = [m for m in model.modules() if isinstance(m, EntropyBottleneck)]
        self.average_aux = self.forward is not model  # under DDP the aux grads are averaged by hand

    def __call__(self, x: Tensor) -> Tensor:
        out = self.forward(x)
        total, terms = self.objective(x, out)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.main_params, self.clip_grad)
        self.optimizer.step()
        values = [total.detach(), *(t.detach() for t in terms.values())]
        if self.aux_optimizer is not None:
            self.aux_optimizer.zero_grad(set_to_none=True)
            aux = sum(m.loss() for m in self.bottlenecks)
            aux.backward()
            if self.average_aux:
                dist.average_grads(self.aux_params)
            self.aux_optimizer.step()
            values.append(aux.detach())
        return torch.stack(values)


def build_training(recipe: Recipe, device: torch.device | str = "cpu", steps_per_epoch: int = 1):
    """Model, objective, optimisers and schedule for a recipe: what ``train`` and the speed benchmark use."""
    from rdkit_ae.model import build_model, build_objective

    interval = recipe.train["schedule_interval"]
    if interval not in SCHEDULE_INTERVALS:
        raise RecipeError(
            f"{recipe.source}: [train] schedule_interval '{interval}' is not one of: {', '.join(SCHEDULE_INTERVALS)}"
        )
    model = build_model(recipe).to(device)
    objective = build_objective(recipe).to(device)
    opt, aux_opt = build_optimizers(model, recipe.train, recipe.source)
    epochs = int(recipe.train["epochs"])
    horizon = epochs if interval == "epoch" else epochs * max(1, steps_per_epoch)
    schedule = LRSchedule(opt, recipe.train["schedule"], interval, horizon)
    return model, objective, opt, aux_opt, schedule


# -- RNG state, stored as tensors and plain lists (weights_only-loadable) ---------
def _rng_capture() -> dict[str, Any]:
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _rng_restore(state: Mapping[str, Any], rank_torch: Tensor | None = None) -> None:
    torch.set_rng_state((rank_torch if rank_torch is not None else state["torch"]).cpu())
    v, internal, gauss = state["python"]
    random.setstate((int(v), tuple(int(i) for i in internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- signals --------------------------------------------------------------------
class _StopRequest:
    """SIGINT/SIGTERM set a flag that the loop reads between steps (so no step is half done).

    A second Ctrl-C more than a second after the first aborts at once, as
    Python's default handler would (torchrun and the terminal may each
    deliver the first one, hence the grace period).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._first = 0.0
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        now = time.monotonic()
        if self.signum is not None and signum == signal.SIGINT and now - self._first > 1.0:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum, self._first = signum, now

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @contextmanager
    def installed(self) -> Iterator["_StopRequest"]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set from the main thread
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        try:
            yield self
        finally:
            for sig, old in self._old.items():
                signal.signal(sig, old)
            self._old.clear()


# -- the trainer ------------------------------------------------------------------
@dataclass
class _Position:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the epoch in progress
    step: int = 0  # optimiser steps in total
    best_loss: float | None = None
    best_epoch: float | None = None
    acc: Tensor | None = None  # loss sums of the epoch in progress (over ranks)


@dataclass
class _RunConfig:
    data: str
    val_fraction: float
    limit_train: int | None
    limit_val: int | None
    world_size: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _esc(value: Any) -> str:
    """User text (paths) printed through rich: brackets are not markup."""
    from rich.markup import escape

    return escape(str(value))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Trainer:
    """Runs one training invocation; :func:`train` is the public entry point."""

    def __init__(
        self,
        recipe: Recipe | str | Path | None,
        data: str | Path,
        out: str | Path | None,
        *,
        overrides: Sequence[str] | Mapping[str, Any] = (),
        epochs: int | None = None,
        max_steps: int | None = None,
        limit_train: int | None = None,
        limit_val: int | None = None,
        time_budget: float | None = None,
        val_fraction: float = 0.1,
        seed: int | None = None,
        device: str = "auto",
        threads: int | None = None,
        resume: str | Path | None = None,
        quiet: bool = False,
        evaluate: bool = True,
        workers: int = 0,
    ):
        self.info = dist.env_info()
        self.quiet = quiet or not self.info.is_main
        self.max_steps, self.time_budget = max_steps, time_budget
        self.do_eval, self.workers = evaluate, int(workers)
        self._check_budget_args(epochs, max_steps, limit_train, limit_val, time_budget, workers)
        self.args = dict(
            recipe=recipe,
            data=str(data),
            out=out,
            overrides=overrides,
            epochs=epochs,
            limit_train=limit_train,
            limit_val=limit_val,
            val_fraction=val_fraction,
            seed=seed,
            device=device,
            threads=threads,
            resume=resume,
        )
        self.console = None
        if not self.quiet:
            from rich.console import Console

            self.console = Console(highlight=False)

    @staticmethod
    def _check_budget_args(epochs, max_steps, limit_train, limit_val, time_budget, workers) -> None:
        for name, value in (
            ("epochs", epochs),
            ("max_steps", max_steps),
            ("limit_train", limit_train),
            ("limit_val", limit_val),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise RdkitError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if time_budget is not None and not (isinstance(time_budget, (int, float)) and time_budget > 0):
            raise RdkitError(f"--time-budget must be a positive number of minutes, got {time_budget!r}")
        if workers < 0:
            raise RdkitError(f"--workers must be 0 or more, got {workers}")

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, soft_wrap=True)

    # -- setup ----------------------------------------------------------------
    def _resolve_plan(self) -> tuple[Recipe, _RunConfig, dict[str, Any] | None, Path]:
        a = self.args
        if a["resume"] is not None:
            return self._resolve_resume()
        if a["recipe"] is None:
            raise RdkitError("give a recipe (a zoo name or a .toml path), or --resume RUN_DIR")
        recipe = load_recipe(a["recipe"], a["overrides"])
        plan: dict[str, Any] = {}
        if a["epochs"] is not None:
            plan["train.epochs"] = int(a["epochs"])
        if a["seed"] is not None:
            plan["train.seed"] = int(a["seed"])
        if plan:
            recipe = load_recipe(recipe, plan)
        threads = int(a["threads"]) if a["threads"] else torch.get_num_threads()
        cfg = _RunConfig(
            a["data"], float(a["val_fraction"]), a["limit_train"], a["limit_val"], self.info.world_size, threads
        )
        out = self._new_out_dir(recipe, a["out"])
        return recipe, cfg, None, out

    def _new_out_dir(self, recipe: Recipe, out: str | Path | None) -> Path:
        if self.info.is_main:
            if out is None:
                stamp = time.strftime("%Y%m%d-%H%M%S")
                base = RUNS_DIR / f"{recipe.name}-{stamp}"
                path, n = base, 1
                while path.exists():
                    n += 1
                    path = base.with_name(f"{base.name}-{n}")
            else:
                path = Path(out).expanduser()
                if (path / LAST).exists():
                    raise RdkitError(
                        f"{path} already holds a run ({LAST}); continue it with --resume {path} or choose another --out"
                    )
                if path.exists() and not path.is_dir():
                    raise RdkitError(f"--out {path} exists and is not a folder")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RdkitError(f"cannot create the run folder {path}: {_one_line(exc)}") from None
            path_s = str(path)
        else:
            path_s = ""
        return Path(dist.broadcast_object(path_s))

    def _resolve_resume(self) -> tuple[Recipe, _RunConfig, dict[str, Any], Path]:
        a = self.args

        def read() -> tuple[str, str, dict[str, Any]]:
            given = Path(a["resume"]).expanduser()
            run_dir = given.parent if given.is_file() else given
            ckpt_path = given if given.is_file() else given / LAST
            if not ckpt_path.is_file():
                raise RdkitError(f"nothing to resume in {run_dir}: no {LAST} (is it a run folder?)")
            if a["out"] is not None and Path(a["out"]).expanduser().resolve() != run_dir.resolve():
                raise RdkitError("--out and --resume name different folders; a resumed run continues in its own folder")
            payload = load_checkpoint(ckpt_path)
            for key in ("optimizer", "scheduler", "position", "run", "rng"):
                if key not in payload:
                    raise CheckpointError(
                        f"{ckpt_path}: not a training checkpoint (no '{key}'); only runs of `rdkit train` can be resumed"
                    )
            return str(run_dir), str(ckpt_path), payload

        # Only rank 0 needs to see the run folder (other nodes may not share its file system).
        run_dir_s, ckpt_s, payload = dist.from_rank0(self.info, read)
        run_dir, ckpt_path = Path(run_dir_s), Path(ckpt_s)
        recipe = Recipe.from_toml(payload["recipe"], payload.get("recipe_name", "recipe"), f"{ckpt_path}:recipe")
        if a["overrides"]:
            raise RdkitError("--set cannot change the recipe of a resumed run (it continues the stored one)")
        if a["recipe"] is not None:
            asked = load_recipe(a["recipe"])
            stored_wo_plan = load_recipe(
                recipe, {"train.epochs": asked.train["epochs"], "train.seed": asked.train["seed"]}
            )
            if asked.digest() != stored_wo_plan.digest():
                raise RdkitError(
                    f"--recipe {a['recipe']} differs from the recipe stored in {ckpt_path}; drop --recipe to resume"
                )
        if a["seed"] is not None and int(a["seed"]) != recipe.train["seed"]:
            raise RdkitError(
                f"--seed {a['seed']} differs from the run's seed {recipe.train['seed']}; a resumed run keeps its seed"
            )
        if a["epochs"] is not None and int(a["epochs"]) != recipe.train["epochs"]:
            before = recipe.train["epochs"]
            recipe = load_recipe(recipe, {"train.epochs": int(a["epochs"])})
            self.say(
                f"[yellow]note: the plan changes from {before} to {a['epochs']} epochs; "
                "the learning-rate schedule follows the new length[/]"
            )
        stored = payload["run"]
        data = stored["data"] if a["data"] in ("cifar10", stored["data"]) else a["data"]
        if data != stored["data"]:
            self.say(f"[yellow]note: reading the data from {_esc(data)} (the run used {_esc(stored['data'])})[/]")
        threads = int(a["threads"]) if a["threads"] else int(stored.get("threads") or torch.get_num_threads())
        cfg = _RunConfig(
            data,
            float(stored["val_fraction"]),
            a["limit_train"] if a["limit_train"] is not None else stored["limit_train"],
            a["limit_val"] if a["limit_val"] is not None else stored["limit_val"],
            self.info.world_size,
            threads,
        )
        if cfg.limit_train != stored["limit_train"]:
            self.say(
                "[yellow]note: --limit-train differs from the run's; epochs will not match an uninterrupted run[/]"
            )
        if self.info.world_size != int(stored.get("world_size", 1)):
            self.say(
                f"[yellow]note: resuming with {self.info.world_size} process(es) instead of {stored.get('world_size', 1)}; "
                "data order and results will differ from an uninterrupted run[/]"
            )
        return recipe, cfg, payload, run_dir

    def _load_data(self, recipe: Recipe, cfg: _RunConfig):
        from rdkit_ae.data.datasets import ImageDataset
        from rdkit_ae.data.sources import load_images

        seed = int(recipe.train["seed"])
        t = recipe.train
        aug = t["augment"]

        def load():
            tr = load_images(cfg.data, "train", val_fraction=cfg.val_fraction, seed=seed, limit=cfg.limit_train)
            va = load_images(cfg.data, "val", val_fraction=cfg.val_fraction, seed=seed, limit=cfg.limit_val)
            return tr, va

        # Rank 0 first: a CIFAR-10 download happens once, not once per process.
        train_images, val_images = dist.rank0_first(self.info, load, "loading the data")
        train_set = ImageDataset(
            train_images,
            int(t["crop_size"]),
            train=True,
            hflip=aug["hflip"],
            color_jitter=aug["color_jitter"],
            seed=seed,
        )
        val_set = ImageDataset(val_images, int(t["crop_size"]), train=False)
        return train_images, val_images, train_set, val_set

    # -- main -------------------------------------------------------------------
    def run(self) -> TrainResult:
        threads_before = torch.get_num_threads()
        created = False
        try:
            device = dist.resolve_device(self.args["device"], self.info)
            created = dist.init(self.info, device)
            result = self._run(device)
            # All ranks arrive before any tears gloo down: a rank that destroys
            # its group while a peer still holds the connection can abort the
            # peer ("terminate called without an active exception").
            dist.barrier()
            return result
        finally:
            torch.set_num_threads(threads_before)
            dist.shutdown(created)

    def _run(self, device: torch.device) -> TrainResult:
        from rdkit_ae.data.datasets import describe, train_batches
        from rdkit_ae.training.runlog import MetricsLog

        recipe, cfg, payload, out = self._resolve_plan()
        torch.set_num_threads(cfg.threads)
        self.recipe, self.cfg, self.out, self.device = recipe, cfg, out, device
        t = recipe.train
        seed = int(t["seed"])
        seed_everything(seed)
        self.train_images, self.val_images, self.train_set, self.val_set = self._load_data(recipe, cfg)
        self.batch_size = int(t["batch_size"])
        self.steps_per_epoch = len(
            train_batches(self.train_set, self.batch_size, 0, seed, self.info.rank, self.info.world_size)
        )
        seed_everything(seed)  # model initialisation does not depend on how the data was loaded
        model, objective, opt, aux_opt, schedule = build_training(recipe, device, self.steps_per_epoch)
        self.model, self.objective, self.opt, self.aux_opt, self.schedule = model, objective, opt, aux_opt, schedule
        pos = _Position()
        if payload is not None:
            pos = self._restore(payload)
        elif self.info.enabled:
            torch.manual_seed(seed + self.info.rank)  # distinct quantisation noise per rank
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch sizes: let cuDNN pick the fastest kernels
        _, aux = split_parameters(model)
        forward = dist.wrap_ddp(model, self.info, device, ignore=[n for n, _ in aux])
        self.step_fn = TrainStep(model, objective, opt, aux_opt, float(t["clip_grad"]), forward=forward)
        self.term_names = ["loss", *objective.names, *(["aux"] if aux_opt is not None else [])]
        self.log = MetricsLog(out / "metrics.jsonl")
        self.pos = pos
        plan_epochs = int(t["epochs"])
        if pos.epoch >= plan_epochs:
            raise RdkitError(
                f"the run in {out} already finished its {plan_epochs} epochs; pass --epochs N (more) to train longer"
            )
        if self.max_steps is not None and pos.step >= self.max_steps:
            raise RdkitError(f"the run in {out} already did {pos.step} steps; raise --max-steps or drop it to go on")
        if self.info.is_main:
            atomic_write_bytes(out / "recipe.toml", lambda f: f.write(recipe.to_toml().encode("utf-8")))
            if payload is None:
                self.log.keep(lambda r: False)
            else:
                self.log.keep(lambda r: not r.get("partial") and int(r.get("epoch", 0)) <= pos.epoch)
        self.say(
            f"[bold]{recipe.name}[/] on {device}{f' x {self.info.world_size} processes' if self.info.enabled else ''}, "
            f"{cfg.threads} thread(s); train {_esc(describe(self.train_set))}; val {len(self.val_set)} images; "
            f"{plan_epochs} epochs of {self.steps_per_epoch} steps (batch {self.batch_size}"
            f"{' per process' if self.info.enabled else ''}); run folder {_esc(out)}"
            + (
                f"; resuming at epoch {pos.epoch + 1}" + (f", batch {pos.batch + 1}" if pos.batch else "")
                if payload is not None
                else ""
            )
        )
        stop = _StopRequest()
        with stop.installed():
            stopped = self._loop(plan_epochs, stop)
        try:
            return self._finish(stopped)
        except KeyboardInterrupt:
            # Training is over and saved; only the figures or the evaluation are missing.
            raise TrainingInterrupted(
                f"interrupted during the final evaluation; the checkpoints in {out} are complete; evaluate with: "
                f"rdkit eval {out / BEST} --data {cfg.data} --split val --val-fraction {cfg.val_fraction:g} --seed {t['seed']}"
                + (f" --limit {cfg.limit_val}" if cfg.limit_val else ""),
                out,
                out / BEST,
                signal.SIGINT,
            ) from None

    def _restore(self, payload: Mapping[str, Any]) -> _Position:
        try:
            self.model.load_state_dict(payload["model"])
            self.opt.load_state_dict(payload["optimizer"])
            if self.aux_opt is not None:
                self.aux_opt.load_state_dict(payload["aux_optimizer"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{self.out / LAST}: cannot restore the training state ({_one_line(exc)[:200]})"
            ) from None
        self.schedule.load_state_dict(payload["scheduler"])
        p = payload["position"]
        acc = payload.get("epoch_acc")
        pos = _Position(int(p["epoch"]), int(p["batch"]), int(p["step"]), p.get("best_loss"), p.get("best_epoch"), None)
        if acc is not None and pos.batch > 0:
            # The stored sums cover every rank; rank 0 carries them, the others add from zero.
            pos.acc = acc.to(self.device) if self.info.is_main else torch.zeros_like(acc, device=self.device)
        rng = payload["rng"]
        ranks = rng.get("torch_ranks")
        mine = ranks[self.info.rank] if ranks is not None and len(ranks) == self.info.world_size else None
        _rng_restore(rng, mine)
        return pos

    # -- the loop -------------------------------------------------------------
    def _loop(self, plan_epochs: int, stop: _StopRequest) -> str:
        start = time.perf_counter()
        epoch_times: list[float] = []
        while self.pos.epoch < plan_epochs:
            t0 = time.perf_counter()
            complete, train_time, images = self._train_epoch(plan_epochs, stop)
            val = self._validate()
            record = self._record(plan_epochs, complete, train_time, images, val, time.perf_counter() - start)
            if complete:
                self.pos.epoch += 1
                self.pos.batch = 0
                self.pos.acc = None
                if self.schedule.interval == "epoch":
                    self.schedule.step()
            improved = self.pos.best_loss is None or (
                val["val_loss"] is not None and val["val_loss"] < self.pos.best_loss
            )
            if improved:
                self.pos.best_loss, self.pos.best_epoch = val["val_loss"], record["epoch_progress"]
            self._save_checkpoints(best=improved)
            if self.info.is_main:
                self.log.append(record)
            self._print_epoch(record, plan_epochs)
            epoch_times.append(time.perf_counter() - t0)
            if self.max_steps is not None and self.pos.step >= self.max_steps and self.pos.epoch < plan_epochs:
                return "max_steps"
            budget = False
            if self.time_budget is not None and self.pos.epoch < plan_epochs:
                # Never start an epoch that is not expected to end within the budget.
                elapsed = time.perf_counter() - start
                budget = elapsed + sum(epoch_times) / len(epoch_times) > self.time_budget * 60.0
            flags = dist.all_reduce(torch.tensor([float(stop.requested), float(budget)]), "max").tolist()
            if flags[0]:
                self._interrupted(stop)
            if flags[1]:
                return "time_budget"
        return "completed"

    def _train_epoch(self, plan_epochs: int, stop: _StopRequest) -> tuple[bool, float, int]:
        """Train from the current position to the end of the epoch (or max_steps); returns (complete, seconds, images)."""
        from rdkit_ae.data.datasets import loader, train_batches

        info, pos = self.info, self.pos
        epoch = pos.epoch
        self.train_set.set_epoch(epoch)
        batches = train_batches(
            self.train_set,
            self.batch_size,
            epoch,
            int(self.recipe.train["seed"]),
            info.rank,
            info.world_size,
            skip=pos.batch,
        )
        if self.max_steps is not None:
            batches = batches[: max(0, self.max_steps - pos.step)]
        complete = pos.batch + len(batches) >= self.steps_per_epoch
        n_terms = len(self.term_names)
        acc = pos.acc if pos.acc is not None else torch.zeros(n_terms, device=self.device)
        pos.acc = acc
        # A host sync per step is free on the CPU; on a GPU, check every few steps.
        sync_every = 1 if self.device.type == "cpu" else 25
        non_blocking = self.device.type == "cuda"
        view = self._progress_start(epoch, plan_epochs)
        images = 0
        self.model.train()
        t0 = time.perf_counter()
        try:
            for i, x in enumerate(loader(self.train_set, batches, workers=self.workers, pin_memory=non_blocking)):
                x = x.to(self.device, non_blocking=non_blocking)
                acc += self.step_fn(x)
                pos.step += 1
                pos.batch += 1
                images += x.size(0)
                if self.schedule.interval == "step":
                    self.schedule.step()
                if pos.step % sync_every == 0 or i == len(batches) - 1:
                    self._check(acc, stop)
                if view is not None:
                    view.advance(pos.batch, acc, images * info.world_size, t0)
        finally:
            if view is not None:
                view.close()
        return complete, time.perf_counter() - t0, images * info.world_size

    def _check(self, acc: Tensor, stop: _StopRequest) -> None:
        """Stop on a non-finite loss or a signal; ranks agree through one small all-reduce."""
        bad = (~torch.isfinite(acc)).any().float().reshape(1)
        flags = torch.cat([bad, torch.tensor([float(stop.requested)], device=acc.device)])
        flags = dist.all_reduce(flags, "max").tolist()
        if flags[0]:
            self._nonfinite(acc)
        if flags[1]:
            self._save_checkpoints(best=False)
            self._interrupted(stop)

    def _nonfinite(self, acc: Tensor) -> None:
        vals = acc.tolist()
        names = [n for n, v in zip(self.term_names, vals) if not math.isfinite(v)] or ["loss"]
        kind = "nan" if any(math.isnan(v) for v in vals) else "inf"
        last = self.out / LAST
        if last.is_file():
            try:
                p = load_checkpoint(last)["position"]
                where = f"the last good checkpoint {last} (epoch {p['epoch']}, step {p['step']}) is kept"
            except RdkitError:
                where = f"{last} is kept"
        else:
            where = "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"the loss became {kind} ({', '.join(names)}) by step {self.pos.step} (epoch {self.pos.epoch + 1}); "
            f"training stopped and {where}; try a lower learning rate (--set train.optimizer.lr=...) "
            "or gradient clipping (--set train.clip_grad=1.0)"
        )

    def _interrupted(self, stop: _StopRequest) -> None:
        signum = stop.signum or signal.SIGINT
        name = signal.Signals(signum).name
        self._write_figures(final=False)
        p = self.pos
        where = f"epoch {p.epoch + 1}, batch {p.batch}" if p.batch else f"the end of epoch {p.epoch}"
        how = (
            f"torchrun --nproc_per_node={self.info.world_size} -m rdkit_ae train"
            if self.info.enabled
            else "rdkit train"
        )
        raise TrainingInterrupted(
            f"interrupted ({name}) at {where} (step {p.step}); checkpoint saved in {self.out / LAST}; "
            f"resume with: {how} --resume {self.out}",
            self.out,
            self.out / LAST,
            signum,
            self.info.is_main,
        )

    # -- validation -------------------------------------------------------------
    @torch.no_grad()
    def _validate(self) -> dict[str, Any]:
        """Loss terms, PSNR/SSIM of 8-bit reconstructions and likelihood bpp on the validation patches."""
        from pytorch_msssim import ssim

        from rdkit_ae.data.datasets import loader, val_batches

        dist.sync_buffers(self.model)  # every rank evaluates rank 0's model
        model = self.model
        model.eval()
        self.objective.eval()  # losses that behave differently in training see validation as such
        n_terms = len(self.objective.names) + 1
        # sums: weighted loss terms, psnr, ssim, bpp, images
        sums = torch.zeros(n_terms + 4, dtype=torch.float64, device=self.device)
        batches = val_batches(len(self.val_set), self.batch_size, self.info.rank, self.info.world_size)
        for x in loader(self.val_set, batches, workers=self.workers, pin_memory=self.device.type == "cuda"):
            x = x.to(self.device)
            out = model(x)
            total, terms = self.objective(x, out)
            B, _, H, W = x.shape
            sums[:n_terms] += torch.stack([total, *terms.values()]).double() * B
            x8 = out["x_hat"].clamp(0, 1).mul(255).round().div(255)
            mse = (x8 - x).pow(2).flatten(1).mean(1).double()
            sums[n_terms] += (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).sum()
            if min(H, W) >= 11:
                sums[n_terms + 1] += ssim(x8, x, data_range=1.0, size_average=False).double().sum()
            bits = sum(torch.log2(lk).flatten(1).sum(1) for lk in _likelihoods(out))
            sums[n_terms + 2] += (-bits.double() / (H * W)).sum()
            sums[n_terms + 3] += B
        model.train()
        self.objective.train()
        sums = dist.all_reduce(sums).tolist()
        n = max(1.0, sums[-1])
        res = {f"val_{name}": sums[i] / n for i, name in enumerate(["loss", *self.objective.names])}
        res["val_psnr"] = sums[n_terms] / n
        res["val_ssim"] = sums[n_terms + 1] / n if min(self.val_set.patch) >= 11 else None
        res["val_bpp"] = sums[n_terms + 2] / n
        return res

    # -- records and output -------------------------------------------------------
    def _record(
        self, plan_epochs: int, complete: bool, train_time: float, images: int, val: dict[str, Any], elapsed: float
    ) -> dict[str, Any]:
        p = self.pos
        acc = (
            dist.all_reduce(p.acc.detach().clone()).tolist() if p.acc is not None else [math.nan] * len(self.term_names)
        )
        steps = max(1, p.batch * self.info.world_size)
        rec: dict[str, Any] = {
            "epoch": p.epoch + 1,
            "partial": not complete,
            "epoch_progress": p.epoch + min(1.0, p.batch / max(1, self.steps_per_epoch)),
            "step": p.step,
            "lr": self.schedule.lr,
        }
        rec.update({f"train_{n}": v / steps for n, v in zip(self.term_names, acc)})
        rec.update(val)
        rec["images_per_s"] = images / train_time if train_time > 0 else None
        rec["epoch_time_s"] = train_time
        rec["time_s"] = elapsed
        return rec

    def _print_epoch(self, rec: dict[str, Any], plan_epochs: int) -> None:
        if self.console is None:
            return
        terms = ", ".join(f"{n} {rec[f'train_{n}']:.4g}" for n in self.term_names[1:])
        ssim_s = f"  SSIM {rec['val_ssim']:.4f}" if rec.get("val_ssim") is not None else ""
        ips = f"{rec['images_per_s']:,.0f} img/s" if rec.get("images_per_s") else ""
        label = f"epoch {rec['epoch']}/{plan_epochs}" + (" (partial)" if rec["partial"] else "")
        self.say(
            f"{label}  loss {rec['train_loss']:.4g}"
            + (f" ({terms})" if terms else "")
            + f"  val {rec['val_loss']:.4g}  PSNR {rec['val_psnr']:.2f} dB{ssim_s}  bpp {rec['val_bpp']:.3f} (est.)"
            + f"  lr {rec['lr']:.3g}  {ips}  {rec['epoch_time_s']:.1f} s"
        )

    def _progress_start(self, epoch: int, plan_epochs: int) -> "_EpochView | None":
        if self.console is None:
            return None
        return _EpochView(self.console, f"epoch {epoch + 1}/{plan_epochs}", self.steps_per_epoch, self.pos.batch)

    def _checkpoint_extra(self) -> dict[str, Any]:
        p = self.pos
        # The epoch's loss sums over all ranks; on resume rank 0 carries them.
        acc = dist.all_reduce(p.acc.detach().clone()).cpu() if p.acc is not None and p.batch > 0 else None
        rng = _rng_capture()
        rng["torch_ranks"] = dist.gather_objects(torch.get_rng_state())  # each rank's noise stream
        return {
            "optimizer": self.opt.state_dict(),
            "aux_optimizer": self.aux_opt.state_dict() if self.aux_opt is not None else None,
            "scheduler": self.schedule.state_dict(),
            "position": {
                "epoch": p.epoch,
                "batch": p.batch,
                "step": p.step,
                "best_loss": p.best_loss,
                "best_epoch": p.best_epoch,
            },
            "epoch_acc": acc,
            "rng": rng,
            "run": self.cfg.to_dict(),
        }

    def _save_checkpoints(self, best: bool) -> None:
        extra = self._checkpoint_extra()  # collective: every rank takes part
        if not self.info.is_main:
            return
        save_checkpoint(self.out / LAST, self.model, self.recipe, **extra)
        if best:
            save_checkpoint(self.out / BEST, self.model, self.recipe, **extra)

    def _write_figures(self, final: bool, model: nn.Module | None = None) -> None:
        if not self.info.is_main:
            return
        from rdkit_ae.training.runlog import plot_loss_curves

        metrics = self.log.read()
        if metrics:
            plot_loss_curves(metrics, self.out / "loss_curves.png", title=self.recipe.name)
        if final and model is not None:
            self._comparison(model)

    @torch.no_grad()
    def _comparison(self, model: nn.Module) -> None:
        from rdkit_ae.data.sources import to_uint8
        from rdkit_ae.training.runlog import plot_comparison

        n = min(COMPARISON_IMAGES, len(self.val_set))
        x = self.val_set.__getitems__(list(range(n)))
        was = model.training
        model.eval()
        x_hat = model(x.to(next(model.parameters()).device))["x_hat"].cpu()
        model.train(was)
        orig, rec = to_uint8(x), to_uint8(x_hat)
        mse = ((orig.astype(np.float64) - rec.astype(np.float64)) ** 2).reshape(n, -1).mean(1)
        labels = [f"{10 * math.log10(255**2 / m):.1f} dB" if m > 0 else "inf dB" for m in mse]
        plot_comparison(
            orig, rec, self.out / "comparison.png", labels, title=f"{self.recipe.name}: originals above reconstructions"
        )

    # -- the end ------------------------------------------------------------------
    def _finish(self, stopped: str) -> TrainResult:
        dist.sync_buffers(self.model)
        digests = dist.gather_objects(dist.weights_digest(self.model))
        result = TrainResult(
            self.out, self.out / BEST, self.out / LAST, [], None, stopped, self.pos.epoch, self.pos.step
        )
        if not self.info.is_main:
            return result
        for name in (LAST, BEST):
            finalize_checkpoint(self.out / name)
        from rdkit_ae.checkpoint import load_model

        best_model, _, _ = load_model(self.out / BEST, map_location="cpu")
        if self.do_eval:
            result.eval = self._final_eval(best_model)
        self._write_figures(final=True, model=best_model)
        result.metrics = self.log.read()
        self._write_run_json(result, digests)
        self._summary(result)
        return result

    def _final_eval(self, model: nn.Module) -> dict[str, Any]:
        from rdkit_ae.evaluation.evaluator import evaluate

        self.say(f"evaluating {BEST} on the {len(self.val_images)} validation images with real bitstreams ...")
        res = evaluate(
            model,
            self.val_images,
            batch_size=64,
            device=str(self.device),
            name=self.recipe.name,
            description=self.recipe.description,
        )
        data = res.to_compressai()
        data["summary"] = res.summary
        data["checkpoint"] = BEST
        data["data"] = {
            "spec": self.cfg.data,
            "split": "val",
            "images": len(self.val_images),
            "val_fraction": self.cfg.val_fraction,
            "seed": int(self.recipe.train["seed"]),
        }
        from rdkit_ae.files import write_json

        write_json(self.out / "eval.json", data)
        return data

    def _write_run_json(self, result: TrainResult, digests: list[str]) -> None:
        from rdkit_ae.files import write_json

        write_json(
            self.out / "run.json",
            {
                "recipe": self.recipe.name,
                "recipe_digest": self.recipe.digest(),
                **self.cfg.to_dict(),
                "device": str(self.device),
                "torch": torch.__version__,
                "stopped": result.stopped,
                "epochs": result.epochs,
                "steps": result.steps,
                "best_epoch": self.pos.best_epoch,
                "best_val_loss": self.pos.best_loss,
                "rank_weight_digests": digests,
                "ranks_in_sync": len(set(digests)) == 1,
            },
        )
        if len(set(digests)) != 1:
            self.say("[red]warning: the processes ended with different weights (see run.json)[/]")

    def _summary(self, result: TrainResult) -> None:
        if self.console is None:
            return
        from rich.table import Table

        last = result.metrics[-1] if result.metrics else {}
        table = Table(title=f"{self.recipe.name}: {result.stopped}", show_header=False)
        table.add_column("what")
        table.add_column("value")
        table.add_row("epochs / steps", f"{result.epochs} / {result.steps}")
        table.add_row(
            "best val loss",
            f"{self.pos.best_loss:.5g} (epoch {self.pos.best_epoch:.4g})" if self.pos.best_loss is not None else "-",
        )
        if last:
            ssim_s = f", SSIM {last['val_ssim']:.4f}" if last.get("val_ssim") is not None else ""
            table.add_row(
                "last validation", f"PSNR {last['val_psnr']:.2f} dB{ssim_s}, {last['val_bpp']:.3f} bpp (estimated)"
            )
            table.add_row(
                "training speed", f"{last['images_per_s']:,.0f} images/s" if last.get("images_per_s") else "-"
            )
        if result.eval is not None:
            s = result.eval["summary"]
            ssim_s = f", SSIM {s['ssim']:.4f}" if s.get("ssim") is not None else ""
            table.add_row(
                "real bitstreams (best.pt)", f"{s['bpp']:.3f} bpp (CR {s['cr']:.1f}), PSNR {s['psnr']:.2f} dB{ssim_s}"
            )
        table.add_row("run folder", _esc(self.out))
        self.console.print(table)


class _EpochView:
    """Progress of one epoch: a rich bar (loss, images/s, ETA) on a terminal, a line every 30 s in a log.

    Reading the loss syncs with the device, so it is refreshed at most twice a second.
    """

    LOG_EVERY = 30.0

    def __init__(self, console, label: str, total: int, done: int):
        self.console, self.label, self.total, self.start_done = console, label, total, done
        self.last = 0.0
        self.bar = None
        if console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[ips]} img/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self.task = self.bar.add_task("train", total=total, completed=done, loss="-", ips="-")
            self.bar.start()
        else:
            self.last = time.perf_counter()  # first log line after LOG_EVERY seconds

    def advance(self, done: int, acc: Tensor, images: int, t0: float) -> None:
        now = time.perf_counter()
        due = now - self.last > (0.5 if self.bar is not None else self.LOG_EVERY)
        if self.bar is not None and not due:
            self.bar.update(self.task, advance=1)
            return
        if not due:
            return
        self.last = now
        loss = f"{acc[0].item() / max(1, done):.4g}"
        rate = images / max(1e-9, now - t0)
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=loss, ips=f"{rate:,.0f}")
            return
        steps_per_s = (done - self.start_done) / max(1e-9, now - t0)
        eta = (self.total - done) / steps_per_s if steps_per_s > 0 else float("nan")
        self.console.print(
            f"  {self.label}: {done}/{self.total} steps, loss {loss}, {rate:,.0f} img/s, "
            f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta)) if math.isfinite(eta) else '?'}",
            soft_wrap=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _likelihoods(out: Mapping[str, Any]) -> Iterable[Tensor]:
    stack = [out.get("likelihoods", {})]
    while stack:
        item = stack.pop()
        if isinstance(item, Tensor):
            yield item
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def finalize_checkpoint(path: Path) -> None:
    """Store entropy-coder tables (``update(force=True)`` on the CPU) in a checkpoint, in place.

    Tables built on the CPU are the same on every machine, so a file coded on
    one decodes on another.
    """
    from rdkit_ae.model import build_model

    payload = load_checkpoint(path, map_location="cpu")
    recipe = Recipe.from_toml(payload["recipe"], payload.get("recipe_name", "recipe"), f"{path}:recipe")
    model = build_model(recipe)
    model.load_state_dict(payload["model"])
    model.update(force=True)
    payload["model"] = model.state_dict()
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def train(
    recipe: Recipe | str | Path | None,
    data: str | Path = "cifar10",
    out: str | Path | None = None,
    *,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    epochs: int | None = None,
    max_steps: int | None = None,
    limit_train: int | None = None,
    limit_val: int | None = None,
    time_budget: float | None = None,
    val_fraction: float = 0.1,
    seed: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    resume: str | Path | None = None,
    quiet: bool = False,
    evaluate: bool = True,
    workers: int = 0,
) -> TrainResult:
    """Train a recipe's model on ``data`` and return where everything went.

    Args:
        recipe: a :class:`Recipe`, zoo name or .toml path (may be None with ``resume``).
        data: ``cifar10``, a .npz, an image folder, or a folder holding cifar-10-batches-py.
        out: run folder (default ``runs/<recipe>-<timestamp>``); must not hold a run yet.
        overrides: ``dotted.key=value`` recipe overrides.
        epochs: planned epochs (sets ``train.epochs``; the schedule spans them).
        max_steps: stop once the run has done this many optimiser steps in total.
        limit_train, limit_val: use only the first N images of each split.
        time_budget: minutes; stops at an epoch boundary (no epoch is started
            that is not expected to end within it); the final evaluation still runs.
        val_fraction: validation share for sources without an official split.
        seed: sets ``train.seed`` (data split, order, augmentation, init).
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:N``.
        threads: torch CPU threads for this call (restored afterwards).
        resume: a run folder (or its last.pt) to continue.
        quiet: print nothing.
        evaluate: finish with the real-bitstream evaluation (eval.json).
        workers: DataLoader worker processes (0: load in the main process).

    Raises:
        TrainingInterrupted: after Ctrl-C/SIGTERM, once last.pt is saved.
        NonFiniteLossError: the loss became NaN/inf (last.pt keeps the last good state).
        RdkitError: bad arguments, recipe or data.
    """
    return Trainer(
        recipe,
        data,
        out,
        overrides=overrides,
        epochs=epochs,
        max_steps=max_steps,
        limit_train=limit_train,
        limit_val=limit_val,
        time_budget=time_budget,
        val_fraction=val_fraction,
        seed=seed,
        device=device,
        threads=threads,
        resume=resume,
        quiet=quiet,
        evaluate=evaluate,
        workers=workers,
    ).run()
