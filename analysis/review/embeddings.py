"""The review model and its image embeddings, computed once per image and cached in memory and on disk.

A click then costs only the prompt encoder and the mask decoder (`analysis.review.prompts`).
On disk an embedding lives at `<cache dir>/<checkpoint sha256>/<JPEG sha256>.npz`, so another
model's weights or another image never read it; it is written to a temporary file renamed into
place, and a file that cannot be read is computed again and replaced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from curation.images import decode_image
from sam_core.checkpoints import CheckpointError, checkpoint_or_shipped, fetch_checkpoint, file_sha256, load_sam
from sam_core.modeling.sam import Sam
from sam_core.predictor import SamPredictor

log = logging.getLogger(__name__)
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "sa-engine" / "embeddings"


@dataclass(frozen=True)
class ReviewModel:
    """A model with weights, known by the sha256 of its checkpoint file."""

    name: str
    sha256: str
    sam: Sam

    @classmethod
    def load(cls, name: str, checkpoint: str | None = None, device: str = "cpu") -> ReviewModel:
        """Model type `name` with `checkpoint` (a path, URL or model name; None: its shipped
        weights). CheckpointError when there are no weights to load: random ones would make the
        suggestions meaningless."""
        source = checkpoint_or_shipped(name, checkpoint, log.info)
        if source is None:
            raise CheckpointError(f"no weights ship for {name}: give --checkpoint")
        path = fetch_checkpoint(source)
        return cls(name, file_sha256(path), load_sam(name, path).to(device))


@dataclass(frozen=True)
class Embedding:
    """The image encoder's output for one image: `tensor` 1xCxGxG float32 (CPU), for an image of
    `original_size` (H, W) resized to `input_size` (H, W) before padding."""

    tensor: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class EmbeddingCache:
    """Embeddings of JPEG images under `model`: the last `memory_images` used in memory, every one
    on disk under `cache_dir`. Safe to call from several threads; one image is encoded at a time."""

    def __init__(self, model: ReviewModel, cache_dir: str | Path = DEFAULT_CACHE_DIR, memory_images: int = 8) -> None:
        if memory_images < 1:
            raise ValueError(f"memory_images must be >= 1, got {memory_images}")
        self.model = model
        self.folder = Path(cache_dir) / model.sha256
        self.memory_images = memory_images
        self._memory: OrderedDict[str, Embedding] = OrderedDict()
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()

    def get(self, jpeg: bytes) -> tuple[Embedding, str]:
        """The embedding of the image `jpeg` holds and where it came from: "memory", "disk" or
        "computed". ImageDecodeError for bytes that are not an image."""
        key = hashlib.sha256(jpeg).hexdigest()
        found = self._from_memory(key)
        if found is not None:
            return found, "memory"
        with self._encode_lock:  # a second request for the same image waits for the first
            found = self._from_memory(key)
            if found is not None:
                return found, "memory"
            found, source = self._from_disk(key), "disk"
            if found is None:
                found, source = self._compute(jpeg), "computed"
                self._to_disk(key, found)
        self._remember(key, found)
        return found, source

    def _from_memory(self, key: str) -> Embedding | None:
        with self._lock:
            found = self._memory.get(key)
            if found is not None:
                self._memory.move_to_end(key)
            return found

    def _remember(self, key: str, embedding: Embedding) -> None:
        with self._lock:
            self._memory[key] = embedding
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_images:
                self._memory.popitem(last=False)

    def _compute(self, jpeg: bytes) -> Embedding:
        predictor = SamPredictor(self.model.sam)
        predictor.set_image(decode_image(jpeg))
        original_size, input_size = predictor.image_sizes()
        return Embedding(predictor.image_embedding().cpu(), original_size, input_size)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def _from_disk(self, key: str) -> Embedding | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as saved:
                tensor = torch.from_numpy(np.array(saved["embedding"], dtype=np.float32))
                original = tuple(int(v) for v in saved["original_size"])
                resized = tuple(int(v) for v in saved["input_size"])
        except (OSError, ValueError, KeyError) as error:
            log.warning("embedding cache %s unreadable (%s): computing it again", path, error)
            return None
        return Embedding(tensor, original, resized)

    def _to_disk(self, key: str, embedding: Embedding) -> None:
        """Write the embedding whole; a cache that cannot be written is logged, not fatal."""
        path = self._path(key)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as f:
                np.savez(
                    f,
                    embedding=embedding.tensor.numpy(),
                    original_size=np.asarray(embedding.original_size, np.int64),
                    input_size=np.asarray(embedding.input_size, np.int64),
                )
            os.replace(partial, path)
        except OSError as error:
            partial.unlink(missing_ok=True)
            log.warning("embedding cache %s not written: %s", path, error)
