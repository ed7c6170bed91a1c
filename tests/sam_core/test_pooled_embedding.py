"""The pooled image embedding: mean and deviation of the image's cells only, unit norm, float16; the mask generator's
embedding of an image is the one `embed_images` computes, from the same encoder pass as its masks."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from sam_core.amg.generator import MaskGenerator
from sam_core.amg.settings import MaskGeneratorSettings
from sam_core.checkpoints import load_sam
from sam_core.pooled_embedding import covered_cells, embed_images, embedding_dim, pool_embeddings


def test_the_padding_is_left_out_and_the_vector_is_a_float16_unit_vector():
    rng = np.random.default_rng(0)
    tokens = torch.full((2, 4, 4, 8), 1000.0)  # the padding: any of it in the mean would dominate
    image = torch.from_numpy(rng.normal(size=(4, 2, 8)).astype(np.float32))
    tokens[0, :, :2] = image  # 64 x 20 of 64 x 64: 4 rows, ceil(20 * 4 / 64) = 2 columns
    tokens[1, :1, :] = image[:1, :1].expand(1, 4, 8)  # 10 x 64: ceil(10 * 4 / 64) = 1 row, 4 equal cells
    pooled = pool_embeddings(tokens, [(64, 20), (10, 64)], image_size=64)

    cells = image.reshape(8, 8).numpy().astype(np.float64)
    mean, deviation = cells.mean(axis=0), cells.std(axis=0)
    expected = np.concatenate([mean / np.linalg.norm(mean), deviation / np.linalg.norm(deviation)]) / np.sqrt(2)
    assert pooled.dtype == np.float16 and pooled.shape == (2, 16)
    np.testing.assert_allclose(pooled[0], expected, atol=1e-3)
    first_cell = image[0, 0].numpy()
    np.testing.assert_allclose(pooled[1, :8], first_cell / np.linalg.norm(first_cell), atol=1e-3)
    np.testing.assert_array_equal(pooled[1, 8:], 0.0)  # equal cells: no deviation, and it stays zero
    np.testing.assert_allclose(np.linalg.norm(pooled.astype(np.float32), axis=1), 1.0, atol=1e-3)


def test_covered_cells_count_every_cell_with_an_image_pixel():
    assert covered_cells((1024, 1024), 64, 1024) == (64, 64)
    assert covered_cells((1024, 683), 64, 1024) == (64, 43)  # 683 / 16 = 42.7: the 43rd is partly image
    assert covered_cells((1, 1024), 64, 1024) == (1, 64)


@pytest.mark.parametrize(
    ("shape", "sizes", "message"),
    [
        ((2, 4, 4, 8), [(64, 64)], "2 token grids but 1 input sizes"),
        ((2, 4, 8), [(64, 64)] * 2, "BxGxGxC"),
        ((1, 4, 4, 8), [(65, 64)], "not within the model input 64x64"),
        ((1, 4, 4, 8), [(0, 64)], "not within the model input"),
    ],
)
def test_bad_input_is_refused_with_a_reason(shape, sizes, message):
    with pytest.raises(ValueError, match=message):
        pool_embeddings(torch.zeros(shape), sizes, image_size=64)


@pytest.fixture(scope="module")
def model():
    return load_sam("sae_tiny", "sae_tiny")


def test_the_generator_returns_each_images_embedding_from_its_full_image_crop(model, dog_photo):
    photos = [dog_photo, skimage.data.astronaut(), skimage.data.coffee()]
    settings = MaskGeneratorSettings(points_per_side=4, crop_n_layers=1)  # the full image among 5 crops each
    generator = MaskGenerator(model, settings)
    records, pooled = generator.propose_with_embeddings(photos)

    assert pooled.dtype == np.float16 and pooled.shape == (3, embedding_dim(model.config))
    np.testing.assert_allclose(pooled.astype(np.float32), embed_images(model, photos).astype(np.float32), atol=2e-3)
    assert records == generator.propose(photos)
