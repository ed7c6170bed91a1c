"""Configuration of the automatic-mask job: defaults in one dataclass, then a YAML file, then flags.

Only what the user sets is forwarded: flags left out and keys absent from the YAML keep the
defaults below. Mask-generator fields go under `generator:` in YAML (any field of
`MaskGeneratorSettings`); the commonest have flags too.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, get_args

import yaml

from curation.filters import QualityFilters
from curation.images import MAX_PIXELS, MIN_SIDE
from curation.release_images import ReleaseImagePolicy
from sam_core.amg.crops import useful_long_side
from sam_core.amg.settings import PRESETS as GENERATOR_PRESETS
from sam_core.amg.settings import MaskGeneratorSettings
from sam_core.checkpoints import bundled_generator_overrides
from sam_core.command_line import STORAGE_OPTIONS_HELP, CommandParser, attribute_help, command_parser, json_object
from sam_core.inference import InferenceOptions, Precision
from sam_core.modeling.registry import MODEL_PRESETS

DEVICES = ("auto", "cpu", "cuda")
GENERATOR_FLAGS = ("points_per_side", "points_per_batch", "crop_n_layers", "pred_iou_thresh", "stability_score_thresh")
CHOICES: dict[str, tuple[str, ...]] = {
    "model": tuple(sorted(MODEL_PRESETS)),
    "preset": tuple(GENERATOR_PRESETS),
    "device": DEVICES,
    "encoder_precision": get_args(Precision),
    "decoder_precision": get_args(Precision),
}
"""The allowed values of the settings that have a fixed set, shown in --help and checked there."""


@dataclass(frozen=True)
class JobConfig:
    input: str
    """Images: a folder or glob on any fsspec filesystem, or a Parquet/CSV manifest with a `uri` column."""
    output: str
    """Release prefix (local folder, s3://, gs://); a rerun on it resumes the same release."""
    model: str = "sae_tiny"
    """Architecture: sae_tiny (shipped weights), vit_h / vit_l / vit_b, or SAM 2.1: sam2.1_hiera_t / _s / _b+ / _l."""
    checkpoint: str | None = None
    """Weights: path, fsspec URL or official model type (default: the model's shipped weights)."""
    preset: str = "sa1b"
    """Mask generator preset: sa1b (the paper's automatic stage), official (SAM's public generator) or
    sam2 (SAM 2's public generator); SAM 2's mask-to-mask refinement: `generator: {use_m2m: true}` in --config."""
    generator: dict[str, Any] = field(default_factory=dict)
    """Overrides of MaskGeneratorSettings fields."""
    filters: dict[str, Any] = field(default_factory=dict)
    """Quality filters on the generator's masks (QualityFilters fields); none by default."""
    deidentify: bool | None = None
    """Blur faces and licence plates in the released images (default: on for the sa1b preset, off for official)."""
    dedup_table: tuple[str, ...] = ()
    """Keep/drop tables of `sa-engine dedup` or `sa-engine semdedup` (the flag repeated for more than
    one): the inputs any of them drops are recorded, never decoded or segmented."""
    device: str = "auto"
    """Where the model runs in each actor: cuda, cpu, or auto (cuda when the actor sees a GPU)."""
    actors: int = 1
    """Size of the model actor pool."""
    gpus_per_actor: float | None = None
    """GPUs each model actor reserves (default: 1 when the cluster has GPUs, else 0)."""
    cpus_per_actor: float = 1.0
    batch_size: int = 4
    """Images per model-actor call; the crops of all of them share encoder batches."""
    encoder_precision: Precision = "auto"
    """Image encoder arithmetic: float32 (reference), bfloat16, float16, or auto (bfloat16 on CUDA, float32 on CPU)."""
    decoder_precision: Precision = "auto"
    """Mask decoder arithmetic: the same choices; auto is float16 on CUDA, float32 on CPU."""
    compile: bool = False
    """Run the image encoder through torch.compile in each actor (slow first batches)."""
    encoder_batch_size: int = 4
    """Crops embedded per encoder call (the sa1b preset has 21 per image); memory grows with it."""
    shard_size: int = 1000
    """Most images per tar shard (the last shards of a run may hold fewer)."""
    release_short_side: int = 1500
    """Released images are resized to this shorter side (never enlarged)."""
    jpeg_quality: int = 90
    min_side: int = MIN_SIDE
    """Images with a side below this many px go to the failures table."""
    max_pixels: int = MAX_PIXELS
    """Images whose header claims more pixels go to the failures table undecoded."""
    first_id: int = 0
    """Image id of the first input in URI order."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """fsspec options for input and output (e.g. {"client_kwargs": {"endpoint_url": ...}}); never stored."""
    ray_address: str | None = None
    """Ray cluster to join (default: the job's cluster under `ray job submit`, else an embedded local Ray)."""
    dashboard: bool = True
    """Start Ray's dashboard on 127.0.0.1 with the embedded local Ray and log its address."""

    def __post_init__(self) -> None:
        tables = (self.dedup_table,) if isinstance(self.dedup_table, str) else tuple(self.dedup_table or ())
        object.__setattr__(self, "dedup_table", tables)  # YAML may give one table as a string
        problems = []
        if self.model not in MODEL_PRESETS:
            problems.append(f"model must be one of {', '.join(sorted(MODEL_PRESETS))}, got {self.model!r}")
        if self.preset not in GENERATOR_PRESETS:
            problems.append(f"preset must be one of {', '.join(GENERATOR_PRESETS)}, got {self.preset!r}")
        if self.device not in DEVICES:
            problems.append(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        for name in ("actors", "batch_size", "shard_size", "release_short_side", "min_side", "max_pixels"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must lie in 1..100, got {self.jpeg_quality}")
        if not all(isinstance(table, str) and table for table in self.dedup_table):
            problems.append(f"dedup_table must be table URIs, got {list(self.dedup_table)!r}")
        if len(set(self.dedup_table)) != len(self.dedup_table):
            problems.append(f"dedup_table names a table twice: {list(self.dedup_table)!r}")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            problems.append(f"gpus_per_actor must be >= 0, got {self.gpus_per_actor}")
        if problems:
            raise ValueError("invalid job configuration: " + "; ".join(problems))
        self.generator_settings()  # refuses unknown or invalid generator fields now, not in an actor
        self.inference_options()
        self.quality_filters()

    def quality_filters(self) -> QualityFilters:
        unknown = sorted(set(self.filters) - {f.name for f in fields(QualityFilters)})
        if unknown:
            raise ValueError(f"invalid job configuration: unknown quality filters {', '.join(unknown)}")
        return QualityFilters(**self.filters)

    @property
    def blur_faces_and_plates(self) -> bool:
        """Whether released images are de-identified: as set, else on for the sa1b preset."""
        return self.preset == "sa1b" if self.deidentify is None else self.deidentify

    def generator_settings(self) -> MaskGeneratorSettings:
        """The preset, then the shipped model's recommended thresholds, then the user's overrides."""
        shipped = bundled_generator_overrides(self.model) if self.checkpoint is None else {}
        overrides = {**shipped, **self.generator}
        return MaskGeneratorSettings.preset(self.preset, **overrides)

    def release_policy(self) -> ReleaseImagePolicy:
        return ReleaseImagePolicy(
            self.release_short_side, self.jpeg_quality, self.blur_faces_and_plates, self.min_side, self.max_pixels
        )

    def model_long_side(self) -> int:
        """The longest side of the image the model actors get: what the crop layout can use."""
        return useful_long_side(MODEL_PRESETS[self.model].image_size, self.generator_settings().crop_n_layers)

    def inference_options(self) -> InferenceOptions:
        return InferenceOptions(self.encoder_precision, self.decoder_precision, self.compile, self.encoder_batch_size)

    def identity(self, checkpoint_sha256: str, dedup_sha256: Sequence[str] = ()) -> dict[str, Any]:
        """Everything that decides the release's content; a resumed run must match it.
        `dedup_sha256`: of each keep/drop table's bytes, in `dedup_table`'s order."""
        return {
            "input": self.input,
            "first_id": self.first_id,
            "model": self.model,
            "checkpoint_sha256": checkpoint_sha256,
            "generator": asdict(self.generator_settings()),
            "encoder_precision": self.encoder_precision,
            "decoder_precision": self.decoder_precision,
            "release_short_side": self.release_short_side,
            "jpeg_quality": self.jpeg_quality,
            "min_side": self.min_side,
            "max_pixels": self.max_pixels,
            "filters": self.quality_filters().active(),
            "deidentify": self.blur_faces_and_plates,
            "dedup_table": list(self.dedup_table),
            "dedup_sha256": list(dedup_sha256),
        }


def build_parser(description: str) -> CommandParser:
    """`sa-engine amg`: --config, then a flag for each JobConfig field (the generator's commonest
    fields and every quality filter among them), its help the field's docstring. Every flag
    defaults to None, so that only what the user sets is forwarded."""
    parser = command_parser("amg", description)
    parser.add_argument("--config", help="YAML file with any of the settings below (flags win over it)")
    docs = attribute_help(JobConfig)
    for f in fields(JobConfig):
        flag = "--" + f.name.replace("_", "-")
        help = docs.get(f.name, "") + ("" if f.default in (MISSING, None, ()) else f" (default: {f.default})")
        if f.name == "generator":
            _add_generator_flags(parser)
        elif f.name == "filters":
            _add_filter_flags(parser)
        elif f.name in ("deidentify", "compile", "dashboard"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
        elif f.name == "dedup_table":
            parser.add_argument(flag, action="append", default=None, metavar="URI", help=help)
        elif f.name == "storage_options":
            parser.add_argument(flag, type=json_object, default=None, help=f"{help} {STORAGE_OPTIONS_HELP}")
        else:
            kind = {"int": int, "float": float, "float | None": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, choices=CHOICES.get(f.name), default=None, help=help)
    return parser


def _add_generator_flags(parser: argparse.ArgumentParser) -> None:
    kinds = {g.name: g.type for g in fields(MaskGeneratorSettings)}
    for name in GENERATOR_FLAGS:
        kind = int if kinds[name] == "int" else float
        help = f"mask generator {name} (default: the preset's, or what suits the shipped weights)"
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=help)


def _add_filter_flags(parser: argparse.ArgumentParser) -> None:
    docs = attribute_help(QualityFilters)
    for g in fields(QualityFilters):
        kind = int if "int" in str(g.type) else float
        parser.add_argument("--" + g.name.replace("_", "-"), type=kind, default=None, help=docs.get(g.name, ""))


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """Defaults <- YAML file (--config) <- flags that were given."""
    values: dict[str, Any] = {}
    if args.config:
        with open(args.config) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of settings, got {type(loaded).__name__}")
        unknown = sorted(set(loaded) - {f.name for f in fields(JobConfig)})
        if unknown:
            raise ValueError(f"{args.config}: unknown settings {', '.join(unknown)}")
        values.update(loaded)
    given = {f.name: getattr(args, f.name) for f in fields(JobConfig) if getattr(args, f.name, None) is not None}
    values.update(given)
    generator = dict(values.get("generator") or {})
    generator.update({name: getattr(args, name) for name in GENERATOR_FLAGS if getattr(args, name) is not None})
    values["generator"] = generator
    quality = dict(values.get("filters") or {})
    quality.update({g.name: getattr(args, g.name) for g in fields(QualityFilters) if getattr(args, g.name) is not None})
    values["filters"] = quality
    missing = [name for name in ("input", "output") if not values.get(name)]
    if missing:
        raise ValueError(f"missing required settings: {', '.join('--' + m for m in missing)}")
    return JobConfig(**values)


def with_gpus(config: JobConfig, cluster_gpus: float) -> JobConfig:
    """`config` with gpus_per_actor decided: 1 when the cluster has GPUs and none was set, else 0."""
    if config.gpus_per_actor is not None:
        return config
    return replace(config, gpus_per_actor=1.0 if cluster_gpus > 0 else 0.0)
