"""SAM checkpoints: the official registry, fetching into a verified cache, and strict loading.

Checkpoints are untrusted files. They are read with `torch.load(weights_only=True)`, their
sha256 is checked when it is known (the official file names carry its first six hex digits),
and their keys and shapes must match the architecture exactly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sam_core.modeling.image_encoder import resample_offset_table, resample_position_grid
from sam_core.modeling.registry import ModelConfig, SamModel, build_model
from sam_core.modeling.sam import Sam
from sam_core.modeling.sam2 import Sam2, image_path_state_dict
from sam_core.storage_retry import counting_retries, filesystem, with_retries

_CHUNK = 8 << 20
_LISTED = 10  # keys named in an error message before "... and N more"
log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, wrong checksum, or the wrong architecture."""


@dataclass(frozen=True)
class OfficialCheckpoint:
    model_type: str
    file_name: str
    url: str
    sha256: str = ""
    """The file's full sha256 where its name does not carry a prefix of it (SAM 2.1's)."""

    @property
    def sha256_prefix(self) -> str:
        """The sha256 to check: `sha256`, else the hex digits after the last underscore of the file name."""
        return self.sha256 or _name_sha256_prefix(self.file_name) or ""


_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything"
_SAM2_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
OFFICIAL_CHECKPOINTS: dict[str, OfficialCheckpoint] = {
    spec.model_type: spec
    for spec in (
        OfficialCheckpoint("vit_h", "sam_vit_h_4b8939.pth", f"{_BASE_URL}/sam_vit_h_4b8939.pth"),
        OfficialCheckpoint("vit_l", "sam_vit_l_0b3195.pth", f"{_BASE_URL}/sam_vit_l_0b3195.pth"),
        OfficialCheckpoint("vit_b", "sam_vit_b_01ec64.pth", f"{_BASE_URL}/sam_vit_b_01ec64.pth"),
        *(
            OfficialCheckpoint(model_type, file_name, f"{_SAM2_BASE_URL}/{file_name}", sha256)
            for model_type, file_name, sha256 in (
                (
                    "sam2.1_hiera_t",
                    "sam2.1_hiera_tiny.pt",
                    "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
                ),
                (
                    "sam2.1_hiera_s",
                    "sam2.1_hiera_small.pt",
                    "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
                ),
                (
                    "sam2.1_hiera_b+",
                    "sam2.1_hiera_base_plus.pt",
                    "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
                ),
                (
                    "sam2.1_hiera_l",
                    "sam2.1_hiera_large.pt",
                    "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
                ),
            )
        ),
    )
}


WEIGHTS_DIR = Path(__file__).parent / "weights"
"""Checkpoints shipped inside the package, named `<model>_<sha256 prefix>.pth` (see MODEL_CARD.md there)."""


BUNDLED_GENERATOR_OVERRIDES: dict[str, dict[str, float]] = {
    # sae_tiny's IoU head predicts 0.1-0.5 on photos and its logits are soft, so the presets'
    # 0.88 / 0.95 would keep no mask at all; these keep its more confident, stabler masks
    # (about 1 in 20 on photos; how they were chosen: weights/MODEL_CARD.md).
    "sae_tiny": {"pred_iou_thresh": 0.35, "stability_score_thresh": 0.6},
}


def bundled_generator_overrides(model_type: str) -> dict[str, float]:
    """Mask-generator thresholds that suit the shipped weights of `model_type` (empty if none ship)."""
    return dict(BUNDLED_GENERATOR_OVERRIDES.get(model_type, {}))


def bundled_checkpoint(model_type: str) -> Path | None:
    """The shipped checkpoint of `model_type` (e.g. `sae_tiny`), or None if none ships."""
    found = sorted(WEIGHTS_DIR.glob(f"{model_type}_*.pth"))
    if len(found) > 1:
        raise CheckpointError(f"more than one bundled checkpoint for {model_type}: {[p.name for p in found]}")
    return found[0] if found else None


def checkpoint_or_shipped(model_type: str, checkpoint: str | None, log: Callable[[str], None]) -> str | None:
    """`checkpoint` when given, else `model_type` when its weights ship with the package (load_sam
    then takes them), else None: the model keeps random weights, and `log` is told that its
    masks mean nothing."""
    if checkpoint is None and bundled_checkpoint(model_type) is not None:
        return model_type
    if checkpoint is None:
        log(f"no checkpoint: {model_type} keeps random weights, so its masks mean nothing")
    return checkpoint


def default_cache_dir() -> Path:
    """$SA_ENGINE_CACHE/checkpoints, else ~/.cache/sa-engine/checkpoints."""
    root = os.environ.get("SA_ENGINE_CACHE") or Path.home() / ".cache" / "sa-engine"
    return Path(root) / "checkpoints"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_checkpoint(
    source: str | Path, cache_dir: str | Path | None = None, expected_sha256: str | None = None
) -> Path:
    """A verified local copy of a checkpoint.

    source: an official model type (`vit_h`, `vit_l`, `vit_b`: its official URL), the name of
    a model whose weights ship in the package (`sae_tiny`), a local path, or any fsspec URL (s3://, gs://, https://, ...). Remote files are copied into
    `cache_dir` (default `default_cache_dir()`) through a temporary file that is renamed into
    place only once its checksum is right, so a broken download never looks finished.
    expected_sha256: a full digest or a prefix; by default the prefix carried by an
    official-style file name (`..._4b8939.pth`), else nothing is checked.
    """
    source = str(source)
    bundled = None if source in OFFICIAL_CHECKPOINTS or "/" in source else bundled_checkpoint(source)
    if bundled is not None:
        source = str(bundled)
    elif source in OFFICIAL_CHECKPOINTS:
        spec = OFFICIAL_CHECKPOINTS[source]
        source, expected_sha256 = spec.url, expected_sha256 or spec.sha256_prefix
    name = source.rstrip("/").rsplit("/", 1)[-1]
    expected = (expected_sha256 or _name_sha256_prefix(name) or "").lower()

    if "://" not in source or source.startswith("file://"):
        path = Path(source.removeprefix("file://"))
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
        _check_digest(path, file_sha256(path), expected)
        return path

    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    cached = target / name
    if cached.is_file() and (not expected or file_sha256(cached).startswith(expected)):
        return cached
    return _download(source, cached, expected)


def _download(url: str, destination: Path, expected: str) -> Path:
    """`url` copied to `destination` through a temporary file; the copy is retried whole under the
    storage retry policy, and a copy that needed retries says so in one log line (the model
    actors' fetches are counted nowhere else)."""
    fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    os.close(fd)
    try:
        fs, remote_path = filesystem(url)
        with counting_retries() as retries:
            try:
                with_retries(lambda: fs.get_file(remote_path, tmp_name), url)
            except OSError as error:  # missing, refused, or failing on every try
                raise CheckpointError(f"cannot fetch checkpoint {url}: {type(error).__name__}: {error}") from error
        if retries:
            log.warning("checkpoint %s fetched after %d storage retries %s", url, retries.total(), dict(retries))
        _check_digest(Path(url), file_sha256(tmp_name), expected)
        os.replace(tmp_name, destination)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return destination


def _check_digest(path: Path, actual: str, expected: str) -> None:
    if expected and not actual.startswith(expected):
        raise CheckpointError(f"checkpoint {path}: sha256 {actual} does not match the expected {expected}")


def _name_sha256_prefix(file_name: str) -> str | None:
    match = re.search(r"_([0-9a-f]{6,64})\.(pth|pt)$", file_name)
    return match.group(1) if match else None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, read with weights_only=True onto the CPU.

    Accepts a bare state dict (the official format) or a dict holding one under "model".
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file: report them all the same way
        raise CheckpointError(
            f"checkpoint {path} cannot be read as a PyTorch state dict (truncated or not a checkpoint?): {error}"
        ) from error
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    return loaded


def check_state_dict_fits(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming the missing, unexpected and mis-shaped keys, if any."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if state_dict[k].shape != expected[k].shape
    )
    problems = [
        _listing(title, items)
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    if problems:
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise CheckpointError(f"checkpoint {source} does not fit the {name} architecture: " + "; ".join(problems))


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    more = f" ... and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return f"{title} ({len(items)}): {shown}{more}"


def resample_position_tables(state_dict: dict[str, torch.Tensor], model: Sam) -> dict[str, torch.Tensor]:
    """`state_dict` with the encoder's position tables resampled to the sizes `model` needs.

    This is how weights trained at one input size start training at another (same patch size):
    the absolute position embedding is resampled bicubically to the new patch grid, and the
    relative position tables of the global-attention blocks linearly to the new offset range.
    Windowed blocks keep their tables. Every other tensor is returned as it is.
    """
    expected = model.state_dict()
    resampled = dict(state_dict)
    for key, value in state_dict.items():
        want = expected.get(key)
        if want is None or want.shape == value.shape:
            continue
        if key == "image_encoder.pos_embed" and value.ndim == 4:
            resampled[key] = resample_position_grid(value, want.shape[1])
        elif key.endswith(("attn.rel_pos_h", "attn.rel_pos_w")) and value.ndim == 2:
            resampled[key] = resample_offset_table(value, want.shape[0])
    return resampled


def load_sam(
    config: ModelConfig | str,
    checkpoint: str | Path | None = None,
    cache_dir: str | Path | None = None,
    expected_sha256: str | None = None,
    resample_positions: bool = False,
) -> SamModel:
    """A SAM (`vit_h`, `vit_l`, `vit_b`, `sae_tiny`) or SAM 2.1 (`sam2.1_hiera_t`, `_s`, `_b+`, `_l`) of
    `config` (a config or a model type) with weights from `checkpoint`.

    checkpoint: a local path, an fsspec URL, or an official model type to fetch its official
    file; None leaves the weights randomly initialised. A SAM 2.1 checkpoint's video-only keys
    (`sam_core.modeling.sam2.VIDEO_ONLY_KEYS`) are dropped; every other key must fit exactly.
    resample_positions (SAM only): accept weights made for another image size, resampling their
    position tables (`resample_position_tables`). The model is returned in eval mode on the CPU.
    """
    model = build_model(config)
    if checkpoint is not None:
        path = fetch_checkpoint(checkpoint, cache_dir, expected_sha256)
        state_dict = read_state_dict(path)
        if isinstance(model, Sam2):
            state_dict = image_path_state_dict(state_dict)
        elif resample_positions:
            state_dict = resample_position_tables(state_dict, model)
        check_state_dict_fits(model, state_dict, str(path))
        model.load_state_dict(state_dict, strict=True)
    return model.eval()
