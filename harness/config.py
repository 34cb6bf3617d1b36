"""Typed, validated configuration: a sweep file (YAML) -> SweepConfig.

Validation happens once, here, before Ray starts, in each section's ``__post_init__`` (through
``config_fields.build``, which adds the field's path). Every error is a ConfigError whose message
starts with the field's path (``stage1.search.lr_g.low: ...``), so a user sees what to fix.
Search spaces are parsed and checked by harness/search_space.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import yaml

from harness import hyperparams
from harness.config_fields import DuplicateKeyError, build, field, load_yaml
from harness.errors import ConfigError
from harness.objective import SHAPES_ONLY, Objective
from harness.phase import STRATEGIES, Phase, Source
from harness.search_space import parse_search
from models.config import PROFILES

PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("none", "default", "reduce-overhead")
EMA_BN_MODES = ("average", "copy")  # train.g_ema_bn: harness/generator_ema.py says what each does


@dataclasses.dataclass(frozen=True)
class DataConfig:
    kind: str = field("shapes", str)
    uri: str | None = field(None, str, optional=True)  # None: shapes is built under <storage>/datasets/
    n: int = field(4000, int)  # shapes only: scenes to build
    seed: int = field(0, int)
    encoder: str = field("hash", str)  # hash | minilm | precomputed
    eval_samples: int = field(256, int)  # fixed held-out captions scored at each evaluation
    # Real datasets: the standard FID Inception's weights (either standard file) or a TorchScript network,
    # local path or URI (harness/metrics/inception.py).
    inception_weights: str | None = field(None, str, optional=True)
    # The classifier IS is computed with (the standard layout, any class count: the StackGAN papers used an
    # Inception fine-tuned on the birds' or flowers' classes); None: the FID Inception's ImageNet logits.
    is_classifier: str | None = field(None, str, optional=True)
    # The papers' protocol, once at the end: samples from the test captions for the final evaluation of every
    # confirmed config (harness/final_eval.py). None: one per test caption (29,330 on CUB); 0: off.
    final_eval_samples: int | None = field(None, int, optional=True)
    # none (the paper) | standardize: sentence embeddings to zero mean, unit variance per dimension,
    # with the training split's statistics (harness/data/dataset.py TextNorm says why)
    text_norm: str = field("none", str)

    def __post_init__(self) -> None:
        if self.kind not in ("shapes", "cub", "flowers"):
            raise ConfigError(f"kind: {self.kind!r} is not one of shapes, cub, flowers")
        if self.kind != "shapes" and not self.uri:
            raise ConfigError(f"uri: {self.kind} needs the release directory")
        if self.kind != "shapes" and self.encoder != "precomputed":
            raise ConfigError(f"encoder: {self.kind} uses the 'precomputed' char-CNN-RNN embeddings")
        if self.kind == "shapes" and self.encoder not in ("hash", "minilm"):
            raise ConfigError(f"encoder: shapes supports hash or minilm, got {self.encoder!r}")
        if self.text_norm not in ("none", "standardize"):
            raise ConfigError(f"text_norm: {self.text_norm!r} is not one of none, standardize")
        if self.n < 20 or self.eval_samples < 2:
            raise ConfigError("n: needs at least 20 scenes and eval_samples >= 2")
        if self.kind == "shapes" and (self.is_classifier or self.final_eval_samples):
            raise ConfigError(f"{'is_classifier' if self.is_classifier else 'final_eval_samples'}: shapes is scored by "
                              f"its judge; the Inception metrics and the final evaluation are for cub and flowers")
        if self.final_eval_samples is not None and self.final_eval_samples != 0 and self.final_eval_samples < 2:
            raise ConfigError(f"final_eval_samples: 0 (off), at least 2, or unset (every test caption), "
                              f"got {self.final_eval_samples}")

    @property
    def final_eval_on(self) -> bool:
        return self.kind != "shapes" and self.final_eval_samples != 0


@dataclasses.dataclass(frozen=True)
class ModelSection:
    profile: str = field("small", str)
    loss: str = field("bce", str)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(f"profile: {self.profile!r} is not one of {', '.join(PROFILES)}")
        if self.loss not in ("bce", "hinge"):
            raise ConfigError(f"loss: {self.loss!r} is not one of bce, hinge")


@dataclasses.dataclass(frozen=True)
class ResourcesConfig:
    workers: int = field(0, int)  # 0: Ray Train's in-process local mode (no worker group to start)
    cpus_per_worker: int = field(1, int)
    gpus_per_worker: float = field(0.0, float)
    custom_resources_per_worker: dict = field(dataclasses.MISSING, dict, default_factory=dict)

    def per_worker(self) -> dict[str, float]:
        """Ray resources one training worker needs (GPU only when it asks for some)."""
        need = {"CPU": self.cpus_per_worker, **self.custom_resources_per_worker}
        if self.gpus_per_worker:
            need["GPU"] = self.gpus_per_worker
        return need

    def __post_init__(self) -> None:
        for name, least in (("workers", 0), ("cpus_per_worker", 1), ("gpus_per_worker", 0)):
            if getattr(self, name) < least:
                raise ConfigError(f"{name}: must be >= {least}, got {getattr(self, name)}")
        if self.gpus_per_worker > 1:
            raise ConfigError(f"gpus_per_worker: a worker trains on one GPU, got {self.gpus_per_worker}")
        if self.is_gpu_fraction and self.workers > 1:
            # Several ranks of one data-parallel run would share a card, and NCCL refuses two ranks on one device.
            raise ConfigError(f"gpus_per_worker: a fraction of a GPU ({self.gpus_per_worker}) is for single-worker "
                              f"trials, got workers: {self.workers}; use whole GPUs or workers: 1")

    @property
    def is_gpu_fraction(self) -> bool:
        """Several trials share each GPU (0 < gpus_per_worker < 1): Ray packs 1 / fraction trials a card."""
        return 0 < self.gpus_per_worker < 1

    @property
    def gpus_per_trial(self) -> float:
        """GPUs one trial reserves: what its GPU-hours are charged at (local mode is one worker)."""
        return self.gpus_per_worker * max(1, self.workers)


@dataclasses.dataclass(frozen=True)
class DivergenceConfig:
    collapse_loss: float = field(1e-3, float)  # D loss below this counts as a collapsed discriminator
    collapse_steps: int = field(200, int)  # consecutive collapsed steps that end the run
    # Steps between reads of the watched losses: each read waits for the GPU, so not every step (harness/loop.py).
    check_every: int = field(50, int)

    def __post_init__(self) -> None:
        for name in ("collapse_steps", "check_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.collapse_loss > 0:
            raise ConfigError(f"collapse_loss: must be > 0, got {self.collapse_loss}")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    seed: int = field(0, int)
    batch_size: int = field(64, int)
    eval_every: int = field(1, int)  # epochs between evaluations (and checkpoints)
    keep_checkpoints: int = field(2, int)  # the last k are kept, plus the best by the stage metric
    lr_decay_every: int = field(100, int)  # epochs; docs/REFERENCE.md: x0.5 every 100 (paper)
    lr_decay_factor: float = field(0.5, float)
    deterministic: bool = field(False, bool)  # bitwise-reproducible CPU runs (slower)
    precision: str = field("auto", str)  # auto: bf16 autocast on GPU, fp32 on CPU
    # Share of mismatched captions taken from the most similar-looking other-key image in the batch
    # instead of a random one (0: the paper). Random mismatches on shapes differ in the background 3
    # times in 4, and D learns to check only that (models/losses.py mismatched_indices).
    hard_negatives: float = field(0.0, float)
    # Multi-worker runs: BatchNorm statistics over the global batch, as the paper's single-GPU batch
    # of 64 had, instead of each worker's share (harness/sync_batchnorm.py). No effect with one worker.
    sync_batchnorm: bool = field(False, bool)
    # Where a run trains. auto: the GPU when the trial reserves one, else the CPU. cpu: always the CPU, even
    # with GPUs reserved (to debug a GPU sweep's scheduling and packing on a machine without GPUs).
    device: str = field("auto", str)
    # torch.compile of G and D: none (eager, the default), default (inductor), reduce-overhead (inductor with
    # CUDA graphs: fewest kernel launches). The first steps pay the compilation.
    compile: str = field("none", str)
    # A moving average of the generator's weights, decay per G step (0: off): what is evaluated, sampled, ranked
    # and handed to Stage-II (harness/generator_ema.py). g_ema_bn: its BatchNorm statistics averaged or copied.
    g_ema: float = field(0.0, float)
    g_ema_bn: str = field("average", str)
    divergence: DivergenceConfig = field(dataclasses.MISSING, DivergenceConfig, default_factory=DivergenceConfig)

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ConfigError("batch_size: must be >= 2 (mismatched pairs need two captions)")
        for name in ("eval_every", "keep_checkpoints", "lr_decay_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.hard_negatives <= 1.0:
            raise ConfigError(f"hard_negatives: must be in [0, 1], got {self.hard_negatives}")
        if not 0.0 <= self.g_ema < 1.0:
            raise ConfigError(f"g_ema: a decay in [0, 1) (0: off; 0.999 is BigGAN's), got {self.g_ema}")
        for name, allowed in (("precision", PRECISIONS), ("device", DEVICES), ("compile", COMPILE_MODES),
                              ("g_ema_bn", EMA_BN_MODES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    # MLflow tracking URI (sqlite:///runs/mlflow.db, http://host:5000, databricks...): the sweep becomes a
    # parent run and every trial a child run. None: MLFLOW_TRACKING_URI when set, else no MLflow.
    mlflow_uri: str | None = field(None, str, optional=True)


@dataclasses.dataclass(frozen=True)
class StageSection:
    epochs: int = field(2, int)  # every confirmation run's budget, and each search trial's unless search_epochs
    # A cheaper budget for the search trials (None: epochs). The search then only screens configs; the
    # confirmation runs train its top configs and the paper defaults at the full ``epochs``, so the ranking
    # that counts is still at an equal, full budget: successive halving with the confirmation as its last rung.
    search_epochs: int | None = field(None, int, optional=True)
    search: dict = field(dataclasses.MISSING, dict, default_factory=dict)
    # Configs the search evaluates right after the defaults, before its sampler proposes any: known-good
    # points such as the best of earlier sweeps. Each names some searched parameters; the rest take defaults.
    start_points: list = field(dataclasses.MISSING, list, default_factory=list)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError("epochs: must be >= 1")
        if self.search_epochs is not None and not 1 <= self.search_epochs <= self.epochs:
            raise ConfigError(f"search_epochs: must be between 1 and epochs ({self.epochs}), got {self.search_epochs}")
        for i, point in enumerate(self.start_points):
            if not isinstance(point, dict) or not point:
                raise ConfigError(f"start_points[{i}]: expected a mapping of searched parameter -> value")
            for name, value in point.items():
                if name not in self.search:
                    raise ConfigError(f"start_points[{i}].{name}: not a searched parameter of this stage")
                if not self.search[name].contains(value):
                    raise ConfigError(f"start_points[{i}].{name}: {value!r} is not {self.search[name].describe()}")

    def budget(self, source: Source) -> int:
        """Epochs a run of this stage trains: search trials get search_epochs (when set), confirmation runs epochs."""
        if not isinstance(source, Source):
            raise TypeError(f"budget: source must be a Source, got {source!r}")
        return self.search_epochs if source is Source.SEARCH and self.search_epochs is not None else self.epochs

    def points(self) -> list[dict[str, Any]]:
        """The defaults, then each start point completed with the defaults: what the search evaluates first."""
        defaults = {name: spec.default for name, spec in self.search.items()}
        return [defaults] + [{**defaults, **point} for point in self.start_points]



SAMPLERS = ("tpe", "random", "gp", "cmaes", "qmc")
SCHEDULERS = ("asha", "hyperband", "median", "none")


@dataclasses.dataclass(frozen=True)
class ConfirmConfig:
    """Confirmation runs: after a phase's search, its top-k configs and the paper defaults are trained
    again at the phase's full budget with ``seeds`` fresh training seeds (the same seeds for every
    config, so comparisons are paired), and the report ranks configs by their mean over those seeds.
    One search run per config cannot tell a better config from a lucky seed (docs/RANKING.md)."""

    top_k: int = field(2, int)
    seeds: int = field(0, int)  # 0: off

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"top_k: must be >= 1, got {self.top_k}")
        if self.seeds < 0 or self.seeds == 1:
            raise ConfigError(f"seeds: must be 0 (off) or >= 2 (one seed gives no interval), got {self.seeds}")

    @property
    def enabled(self) -> bool:
        return self.seeds > 0


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    RENAMED: ClassVar[dict[str, str]] = {"top_k": "stage2_parents"}  # search.confirm.top_k is the other top_k
    strategy: str = field("staged", str)  # staged: Stage-I sweep, then Stage-II from its top stage2_parents
    num_samples: int = field(4, int)  # trials per stage sweep (per strategy, for joint)
    max_concurrent: int | None = field(None, int, optional=True)  # None: derived from resources
    # The metric searched and ranked (objective.METRICS), and how many of a run's last evaluations its value
    # averages. The code reads both as one typed Objective: SweepConfig.objective.
    objective: str = field("fid", str)
    objective_window: int = field(1, int)
    grace_period: int = field(1, int)  # ASHA: epochs before a trial may be stopped
    stage2_parents: int = field(2, int)  # staged: the top Stage-I checkpoints a Stage-II trial may start from
    seed: int | None = field(None, int, optional=True)  # None: derived from the date, and recorded
    time_budget_s: float | None = field(None, float, optional=True)
    max_failures: int = field(2, int)  # worker-group restarts per training run
    # Optuna's sampler, seeded. Multivariate TPE is the default: it models the learning rates together.
    sampler: str = field("tpe", str)
    startup_trials: int = field(10, int)  # tpe/gp: random trials before the model is used (Optuna's default)
    scheduler: str = field("asha", str)  # Ray Tune's early stopping; none runs every trial to the end
    reduction_factor: int = field(4, int)  # asha/hyperband: keep 1/reduction_factor at each rung (Ray's default)
    confirm: ConfirmConfig = field(dataclasses.MISSING, ConfirmConfig, default_factory=ConfirmConfig)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler: {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler: {self.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        if self.reduction_factor < 2:
            raise ConfigError(f"reduction_factor: must be >= 2, got {self.reduction_factor}")
        if self.startup_trials < 1:
            raise ConfigError(f"startup_trials: must be >= 1, got {self.startup_trials}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy: {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.num_samples < 1:
            raise ConfigError(f"num_samples: must be >= 1, got {self.num_samples}")
        if self.confirm is not None and self.confirm.enabled and self.confirm.top_k > self.num_samples:
            raise ConfigError(f"confirm.top_k: {self.confirm.top_k} configs to confirm, but the search runs "
                              f"only num_samples = {self.num_samples} trials")
        Objective(self.objective, self.objective_window)  # refuses an unknown metric or a window below 1
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError("max_concurrent: must be >= 1")
        for name in ("stage2_parents", "grace_period"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    name: str = field("sweep", str)
    data: DataConfig = field(dataclasses.MISSING, DataConfig, default_factory=DataConfig)
    model: ModelSection = field(dataclasses.MISSING, ModelSection, default_factory=ModelSection)
    resources: ResourcesConfig = field(dataclasses.MISSING, ResourcesConfig, default_factory=ResourcesConfig)
    train: TrainSettings = field(dataclasses.MISSING, TrainSettings, default_factory=TrainSettings)
    stage1: StageSection = field(dataclasses.MISSING, StageSection, default_factory=StageSection)
    stage2: StageSection = field(dataclasses.MISSING, StageSection, default_factory=StageSection)
    search: SearchConfig = field(dataclasses.MISSING, SearchConfig, default_factory=SearchConfig)
    tracking: TrackingConfig = field(dataclasses.MISSING, TrackingConfig, default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"name: {self.name!r} may hold only letters, digits, '-' and '_'")
        if self.data.kind != "shapes" and self.search.objective in SHAPES_ONLY:
            raise ConfigError(f"search.objective: {self.search.objective} is computed by the shapes judge only "
                              f"(data.kind: shapes); real datasets are scored by fid or inception_score")
        if self.data.kind != "shapes" and not self.data.inception_weights:
            raise ConfigError(f"data.inception_weights: {self.data.kind} is scored by FID and IS in an Inception "
                              f"network's space: give the standard FID Inception's weights file (or a TorchScript network)")
        if self.search.sampler == "cmaes":
            for stage, section in ((1, self.stage1), (2, self.stage2)):
                numeric = [n for n, spec in section.search.items() if spec.distribution != "categorical"]
                if len(numeric) < 2:  # Optuna's CMA-ES samples categoricals independently; one dim has no covariance
                    raise ConfigError(f"search.sampler: cmaes needs at least two numeric parameters to search, "
                                      f"stage{stage}.search has {len(numeric)}")
        if self.train.device == "cuda" and not self.resources.gpus_per_worker:
            raise ConfigError("train.device: cuda needs resources.gpus_per_worker > 0 (Ray gives a trial only the GPUs "
                              "it reserves)")
        if self.data.encoder == "precomputed":
            for name, spec in self.stage2.search.items():
                if any(hyperparams.Stage2Hyperparams(**{name: c}).uses_word_features for c in spec.choices or ()):
                    raise ConfigError(f"stage2.search.{name}: the precomputed embeddings have no word features")

    def require_search_space(self) -> None:
        """A sweep (tune.py, nightly.py) needs something to search in each stage it trains; Tune would
        otherwise start and then die on "no search space has been defined". train.py needs none."""
        for name, section in (("stage1", self.stage1), ("stage2", self.stage2)):
            if not section.search:
                raise ConfigError(f"{name}.search: no parameters (give each searched parameter a spec, or a value "
                                  "to fix it)")

    @property
    def objective(self) -> Objective:
        """The typed objective (metric, direction, window) every ranking of this sweep uses."""
        return Objective(self.search.objective, self.search.objective_window)

    def stage(self, stage: int) -> StageSection:
        """The section of Stage-I (1) or Stage-II (2)."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        return self.stage1 if stage == 1 else self.stage2

    def defaults(self, stage: int) -> dict[str, Any]:
        """Each searched parameter's default (the paper's values where the file says so)."""
        return {name: spec.default for name, spec in self.stage(stage).search.items()}

    def screened_stages(self) -> list[tuple[str, int, int]]:
        """(stage, search epochs, epochs) of each stage whose search trials train less than its confirmation runs."""
        return [(name, section.budget(Source.SEARCH), section.epochs) for name, section in (("Stage-I", self.stage1),
                ("Stage-II", self.stage2)) if section.budget(Source.SEARCH) < section.epochs]

    def first_point(self, phase: Phase) -> dict[str, Any]:
        """The point a phase evaluates first, the defaults (the paper's values), as Tune sees it."""
        return self.start_points(phase)[0]

    def start_points(self, phase: Phase) -> list[dict[str, Any]]:
        """The points a phase evaluates before its sampler proposes any, as Tune sees them: the defaults,
        then the stages' ``start_points`` (joint pairs the i-th of each stage, prefixing s1./s2.)."""
        if not isinstance(phase, Phase):
            raise TypeError(f"start_points: phase must be a Phase, got {phase!r}")
        if phase is Phase.STAGE1:
            return self.stage1.points()
        if phase is Phase.STAGE2:
            return [{**p, "stage1_parent": 0} for p in self.stage2.points()]  # from the best Stage-I checkpoint
        s1, s2 = self.stage1.points(), self.stage2.points()
        return [{**{f"s1.{k}": v for k, v in s1[min(i, len(s1) - 1)].items()},
                 **{f"s2.{k}": v for k, v in s2[min(i, len(s2) - 1)].items()}} for i in range(max(len(s1), len(s2)))]


def sweep_from_dict(data: Any) -> SweepConfig:
    def stage(n):
        return lambda d, p: build(StageSection, d, p, search=parse_search(n))

    return build(
        SweepConfig, data, "",
        data=lambda d, p: build(DataConfig, d, p),
        model=lambda d, p: build(ModelSection, d, p),
        resources=lambda d, p: build(ResourcesConfig, d, p),
        train=lambda d, p: build(TrainSettings, d, p, divergence=lambda dd, pp: build(DivergenceConfig, dd, pp)),
        stage1=stage(1),
        stage2=stage(2),
        search=lambda d, p: build(SearchConfig, d, p, confirm=lambda dd, pp: build(ConfirmConfig, dd, pp)),
        tracking=lambda d, p: build(TrackingConfig, d, p),
    )


def load_sweep(path: str) -> SweepConfig:
    try:
        with open(path, encoding="utf-8") as f:
            data = load_yaml(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such sweep file") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a directory, not a sweep file") from exc
    except PermissionError as exc:
        raise ConfigError(f"{path}: not readable ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        raise ConfigError(f"{path}: the sweep file is empty")
    try:
        return sweep_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
