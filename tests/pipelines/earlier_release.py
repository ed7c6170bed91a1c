"""A release made earlier from a test's inputs, as `sa-engine semdedup` reads it: each readable input a
released image (no masks: semdedup reads no masks) with its record's source and size, and its real
embedding from the shipped `sae_tiny` pooled as the job pools it, written with the project's
`ReleaseWriter`. No Ray and no mask generation: one encoder pass per image."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np

from curation.embeddings import embedding_info, embeddings_table
from curation.images import MAX_PIXELS, MIN_SIDE, ImageDecodeError, decode_image
from curation.inputs import plan_inputs
from curation.records import image_entry
from curation.release import ReleaseImage, ReleaseWriter
from curation.release_images import ReleaseImagePolicy, prepare_image, provenance_fields
from sam_core.checkpoints import checkpoint_or_shipped, fetch_checkpoint, file_sha256, load_sam
from sam_core.pooled_embedding import POOLING, embed_images

MODEL = "sae_tiny"
POLICY = ReleaseImagePolicy(
    short_side=1500, jpeg_quality=90, deidentify=False, min_side=MIN_SIDE, max_pixels=MAX_PIXELS
)


def embed_images_of(data: list[bytes]) -> np.ndarray:
    """(N, D) float16: the pooled `sae_tiny` embeddings of N encoded images."""
    model = load_sam(MODEL, checkpoint_or_shipped(MODEL, None, print))
    return embed_images(model, [decode_image(item) for item in data])


def earlier_release(out: Path, inputs: str) -> str:
    """A one-shard release at `out` of the images under `inputs` (a folder, listed as the job lists it;
    ids 0.. in URI order; the inputs that do not decode left out, as failures), with their embeddings;
    returns its URI."""
    images, data = [], []
    for uri in plan_inputs(inputs).uris().to_pylist():
        with fsspec.open(uri, "rb") as f:
            source = f.read()
        try:
            prepared = prepare_image(source, POLICY, model_long_side=1024)
        except ImageDecodeError:
            continue
        extra = provenance_fields(uri, prepared.sha256, prepared.source_size, prepared.blurred_regions)
        record = {"image": image_entry(len(images), prepared.release_size, extra), "annotations": []}
        images.append(ReleaseImage(record, prepared.release_jpeg))
        data.append(source)
    sha256 = file_sha256(fetch_checkpoint(checkpoint_or_shipped(MODEL, None, print)))
    vectors = embed_images_of(data)
    info = embedding_info(MODEL, sha256, POOLING, vectors.shape[1])
    embeddings = embeddings_table(np.arange(len(images)), vectors, info)
    ReleaseWriter(str(out)).commit_shard(0, images, [], embeddings=embeddings)
    return str(out)
