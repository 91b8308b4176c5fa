"""The sweep's jobs: train a point, evaluate it, run a classical codec at one quality.

Each job is a plain, picklable dataclass (paths, dicts, a Recipe) with a
stable ``key`` (its cache key) and a ``run(ctx)`` that returns its result;
nothing is shared between jobs but files in the output folder. What a job
takes from the process it runs in (loaded images, the train function,
progress and note callbacks) comes in a :class:`JobContext`, so another
process (or machine) can run the same job with its own context.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

from PIL import __version__ as pillow_version

from rdkit_ae.bench.cache import CACHE_VERSION, file_sha, load_result, read_json, sha, store_result
from rdkit_ae.bench.images import content_hash, load_data
from rdkit_ae.bench.spec import DataSpec, spec_env
from rdkit_ae.bench.spec_tables import RatePoint
from rdkit_ae.bench.targets import evaluate_at_bpp
from rdkit_ae.bench.training import TrainOutcome, finished_run, train_point
from rdkit_ae.data.sources import ImageSet
from rdkit_ae.errors import RdkitError
from rdkit_ae.evaluation.classic import evaluate_codec, get_codec
from rdkit_ae.evaluation.evaluator import evaluate_checkpoint
from rdkit_ae.evaluation.metrics import cr_from_bpp
from rdkit_ae.evaluation.padding import DEFAULT_PAD
from rdkit_ae.evaluation.results import PERCEPTUAL_KEYS, EvalResult
from rdkit_ae.files import write_json
from rdkit_ae.recipe import Recipe

TrainFn = Callable[..., Any]


def _ignore(*_: Any) -> None:
    pass


@dataclass(frozen=True)
class ImagesRef:
    """Which images a job works on: a DataSpec, how to split it, and the content hash that keys caches."""

    data: DataSpec
    val_fraction: float
    seed: int
    key: str
    count: int  # how many images


@dataclass
class JobContext:
    """What a job takes from the process it runs in (never pickled with the job)."""

    images: dict[str, ImageSet] = field(default_factory=dict)  # by ImagesRef.key; filled on demand
    train_fn: TrainFn | None = None  # None: rdkit_ae.training.train
    progress: Callable[[float], None] = _ignore  # fraction of the current job done
    note: Callable[[str], None] = _ignore  # a message for the user

    def images_for(self, ref: ImagesRef) -> ImageSet:
        if ref.key not in self.images:
            images = load_data(ref.data, ref.val_fraction, ref.seed)
            if content_hash(images) != ref.key:
                raise RdkitError(f"{ref.data.describe()}: the images changed since the sweep started")
            self.images[ref.key] = images
        return self.images[ref.key]


class _Fraction:
    """Turns per-image progress counts into the fraction of ``total`` done."""

    def __init__(self, report: Callable[[float], None], total: int):
        self.report, self.total, self.done = report, max(1, total), 0

    def __call__(self, n: int) -> None:
        self.done += n
        self.report(min(1.0, self.done / self.total))


@dataclass
class PointResult:
    curve: str
    kind: str  # "learned", "classical", "external"
    label: str
    summary: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    run_dir: str = ""
    checkpoint: str = ""
    quality: int | None = None
    train_seconds: float | None = None
    steps: int | None = None
    cached: bool = False
    description: str = ""  # the evaluation's (for a classical codec: its settings)
    recipe: str = ""  # a learned point's recipe name


@dataclass
class CodecJob:
    """One classical codec at one quality on the evaluation images."""

    codec: str
    quality: int
    options: dict[str, Any]
    images: ImagesRef
    out: str  # the sweep's output folder
    resume: bool = True
    pillow: str = pillow_version  # part of the key: another Pillow may code differently

    @property
    def key(self) -> str:
        return sha(
            {
                "v": CACHE_VERSION,
                "codec": self.codec,
                "q": self.quality,
                "opt": self.options,
                "pillow": self.pillow,
                "data": self.images.key,
                **({"metrics": list(self.images.data.metrics)} if self.images.data.metrics else {}),
            }
        )

    @property
    def path(self) -> Path:
        return Path(self.out) / "classical" / f"{self.codec}-q{self.quality}-{self.key[:12]}.json"

    def run(self, ctx: JobContext) -> PointResult:
        res = load_result(self.path) if self.resume else None
        cached = res is not None
        if res is None:
            images = ctx.images_for(self.images)
            res = evaluate_codec(
                images,
                self.codec,
                self.quality,
                options=self.options,
                progress=_Fraction(ctx.progress, len(images)),
                metrics=self.images.data.metrics,
            )
            store_result(self.path, res)
        label = get_codec(self.codec).label
        return PointResult(
            label, "classical", f"q={self.quality}", res.summary, quality=self.quality, cached=cached,
            description=res.description,
        )  # fmt: skip


@dataclass
class TrainJob:
    """Train one point of a model curve into ``OUT/runs/<key[:16]>`` (or take the finished run there)."""

    curve: str
    label: str
    recipe: Recipe
    overrides: dict[str, Any]
    budget: dict[str, Any]
    seed: int
    train_data: str  # what ``train(data=...)`` gets
    train_key: str  # the training images' content hash
    env: dict[str, str]  # variables set while training (e.g. VGG weights); part of the key
    out: str
    resume: bool = True
    rates: tuple[RatePoint, ...] = ()  # a variable-rate model's operating points (one evaluation each; not keyed)

    @property
    def eval_labels(self) -> list[str]:
        """The labels of the evaluations of what this job trains: its own, or one per operating point."""
        if not self.rates:
            return [self.label]
        return [r.label if self.label == "default" else f"{self.label}, {r.label}" for r in self.rates]

    @property
    def key(self) -> str:
        key: dict[str, Any] = {
            "v": CACHE_VERSION,
            "recipe": self.recipe.digest(),
            "data": self.train_key,
            "budget": self.budget,
            "seed": self.seed,
        }
        if self.env:
            key["env"] = self.env
        return sha(key)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / "runs" / self.key[:16]

    def run(self, ctx: JobContext) -> TrainOutcome:
        done = self.run_dir / "done.json"
        info = read_json(done) if self.resume else None
        if isinstance(info, dict) and Path(info.get("checkpoint", "")).is_file():
            return TrainOutcome.from_info(info, cached=True)
        with spec_env(self.env):
            outcome = self._train(ctx)
        if outcome.failure is None:
            write_json(done, outcome.info())
        return outcome

    def _train(self, ctx: JobContext) -> TrainOutcome:
        train_dir = self.run_dir / "train"
        kwargs = dict(
            data=self.train_data, out=train_dir, overrides=[], seed=self.seed, quiet=True, evaluate=False, **self.budget
        )
        finished = finished_run(train_dir, self.recipe, self.budget) if self.resume else None
        if finished is not None:
            return finished
        t0 = time.perf_counter()
        result = None
        if self.resume and (train_dir / "last.pt").is_file():
            # An interrupted training: continue it from its last checkpoint (the
            # trainer makes that equivalent to an uninterrupted run).
            try:
                result = train_point(ctx.train_fn, None, resume=train_dir, **kwargs)
            except RdkitError as exc:
                ctx.note(f"train {self.curve} [{self.label}]: could not resume ({exc}); starting this point over")
        if result is None:
            self._start_over()
            try:
                result = train_point(ctx.train_fn, self.recipe, **kwargs)
            except RdkitError as exc:
                return TrainOutcome(failure=str(exc))
        ckpt = getattr(result, "best_checkpoint", None) or getattr(result, "last_checkpoint", None)
        if ckpt is None or not Path(ckpt).is_file():
            raise RdkitError(f"training {self.curve} [{self.label}] produced no checkpoint in {self.run_dir}")
        return TrainOutcome(
            checkpoint=str(Path(ckpt).resolve()),
            checkpoint_sha256=file_sha(Path(ckpt)),
            train_seconds=time.perf_counter() - t0,
            stopped=getattr(result, "stopped", None),
            epochs=getattr(result, "epochs", None),
            steps=getattr(result, "steps", None),
        )

    def _start_over(self) -> None:
        """An empty run folder (unfinished and not resumable, or --fresh) with what the key was made of."""
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        # For a human wondering why a point retrained.
        (self.run_dir / "point.json").write_text(
            json.dumps(
                {
                    "curve": self.curve,
                    "label": self.label,
                    "recipe": self.recipe.name,
                    "overrides": self.overrides,
                    "recipe_digest": self.recipe.digest(),
                    "budget": self.budget,
                    "seed": self.seed,
                    "train_data": self.train_data,
                    "resolved_recipe": self.recipe.data,
                },
                indent=2,
                default=str,
            )
        )


@dataclass
class EvalJob:
    """Evaluate a trained point's checkpoint with real bitstreams; cached beside its run."""

    curve: str
    label: str
    overrides: dict[str, Any]
    run_dir: str
    checkpoint: str
    checkpoint_sha256: str
    train_seconds: float | None
    steps: int | None
    images: ImagesRef
    batch_size: int
    device: str
    resume: bool = True
    pad: str = DEFAULT_PAD  # see rdkit_ae.evaluation.padding
    rate: float | None = None  # a variable-rate model's rate position; None: the checkpoint as it is
    target_bpp: float | None = None  # or rate control per image to this bpp (rdkit_ae.bench.targets)

    @classmethod
    def after(
        cls,
        job: TrainJob,
        trained: TrainOutcome,
        images: ImagesRef,
        batch_size: int,
        device: str,
        pad: str | None = None,
        point: int | None = None,
    ) -> EvalJob:
        """The evaluation of what ``job`` trained; ``pad`` defaults to the evaluation images' ([eval].pad).

        ``point``: which of ``job.rates`` (a variable-rate model's operating points) to evaluate at.
        """
        if trained.checkpoint is None or trained.checkpoint_sha256 is None:
            raise ValueError(f"{job.curve} [{job.label}]: nothing to evaluate ({trained.failure})")
        return cls(
            job.curve,
            job.eval_labels[point or 0],
            job.overrides,
            str(job.run_dir),
            trained.checkpoint,
            trained.checkpoint_sha256,
            trained.train_seconds,
            trained.steps,
            images,
            batch_size,
            device,
            job.resume,
            pad or images.data.pad,
            None if point is None or job.rates[point].bpp is not None else job.rates[point].position,
            None if point is None else job.rates[point].bpp,
        )

    @classmethod
    def all_after(
        cls, job: TrainJob, trained: TrainOutcome, images: ImagesRef, batch_size: int, device: str
    ) -> list[EvalJob]:
        """The evaluations of what ``job`` trained: one, or one per operating point of a variable-rate model."""
        which = range(len(job.rates)) if job.rates else [None]
        return [cls.after(job, trained, images, batch_size, device, point=i) for i in which]

    @property
    def key(self) -> str:
        key = {"v": CACHE_VERSION, "ckpt": self.checkpoint_sha256, "data": self.images.key, "batch": self.batch_size}
        if self.pad != DEFAULT_PAD:  # only then, so evaluations cached before the option keep their keys
            key["pad"] = self.pad
        if self.rate is not None:  # likewise: fixed-rate points keep their keys
            key["rate"] = self.rate
        if self.target_bpp is not None:
            key["target_bpp"] = self.target_bpp
        if self.images.data.metrics:  # likewise: evaluations without perceptual metrics keep their keys
            key["metrics"] = list(self.images.data.metrics)
        return sha(key)

    @property
    def path(self) -> Path:
        return Path(self.run_dir) / f"eval-{self.key[:12]}.json"

    def run(self, ctx: JobContext) -> PointResult:
        res: EvalResult | None = load_result(self.path) if self.resume else None
        cached = res is not None
        if res is None:
            images = ctx.images_for(self.images)
            evaluate = evaluate_checkpoint if self.target_bpp is None else partial(evaluate_at_bpp, bpp=self.target_bpp)
            res = evaluate(
                self.checkpoint,
                images,
                batch_size=self.batch_size,
                device=self.device,
                name=self.curve,
                progress=_Fraction(ctx.progress, len(images)),
                pad=self.pad,
                rate=self.rate,
                metrics=self.images.data.metrics,
            )
            store_result(self.path, res)
        return PointResult(
            self.curve,
            "learned",
            self.label,
            res.summary,
            self.overrides,
            self.run_dir,
            self.checkpoint,
            train_seconds=self.train_seconds,
            steps=self.steps,
            cached=cached,
            description=res.description,
            recipe=str(res.meta.get("recipe", "")),
        )


def external_points(ext: dict[str, Any]) -> list[PointResult]:
    """The points of a CompressAI results entry (read by the spec), in this sweep's summary keys."""
    r = ext["results"]
    pts = []
    for i, bpp in enumerate(r["bpp"]):
        summary = {
            "bpp": bpp,
            "cr": cr_from_bpp(bpp),
            "psnr": r["psnr-rgb"][i],
            "ssim": r["ssim-rgb"][i] if "ssim-rgb" in r else None,
            "ms_ssim": r["ms-ssim-rgb"][i] if "ms-ssim-rgb" in r else None,
        }
        for key in ("encoding_time", "decoding_time"):
            if key in r:
                summary[key] = r[key][i]
        for key in PERCEPTUAL_KEYS:  # "haarpsi-rgb" -> "haarpsi", ...
            if f"{key.replace('_', '-')}-rgb" in r:
                summary[key] = r[f"{key.replace('_', '-')}-rgb"][i]
        pts.append(PointResult(ext["name"], "external", f"#{i}", summary, description=ext["description"]))
    return pts
