"""The pooled image embedding: the image's cells only, unit norm, float16; the mask generator's
embedding of an image is the one `embed_images` computes, from the same encoder pass as its masks."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from sam_core.amg.generator import MaskGenerator
from sam_core.amg.settings import MaskGeneratorSettings
from sam_core.checkpoints import load_sam
from sam_core.pooled_embedding import covered_cells, embed_images, pool_embeddings


def test_the_padding_is_left_out_and_the_vector_is_a_float16_unit_vector():
    rng = np.random.default_rng(0)
    features = torch.full((2, 8, 4, 4), 1000.0)  # the padding: any of it in the mean would dominate
    image = torch.from_numpy(rng.normal(size=(8, 4, 2)).astype(np.float32))
    features[0, :, :, :2] = image  # 64 x 20 of 64 x 64: 4 rows, ceil(20 * 4 / 64) = 2 columns
    features[1, :, :1, :] = image[:, :1, :1].expand(8, 1, 4)  # 10 x 64: ceil(10 * 4 / 64) = 1 row
    pooled = pool_embeddings(features, [(64, 20), (10, 64)], image_size=64)

    expected = image.mean(dim=(1, 2)).numpy()
    assert pooled.dtype == np.float16 and pooled.shape == (2, 8)
    np.testing.assert_allclose(pooled[0], expected / np.linalg.norm(expected), atol=1e-3)
    first_cell = image[:, 0, 0].numpy()
    np.testing.assert_allclose(pooled[1], first_cell / np.linalg.norm(first_cell), atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(pooled.astype(np.float32), axis=1), 1.0, atol=1e-3)


def test_covered_cells_count_every_cell_with_an_image_pixel():
    assert covered_cells((1024, 1024), 64, 1024) == (64, 64)
    assert covered_cells((1024, 683), 64, 1024) == (64, 43)  # 683 / 16 = 42.7: the 43rd is partly image
    assert covered_cells((1, 1024), 64, 1024) == (1, 64)


@pytest.mark.parametrize(
    ("shape", "sizes", "message"),
    [
        ((2, 8, 4, 4), [(64, 64)], "2 feature maps but 1 input sizes"),
        ((2, 8, 4), [(64, 64)] * 2, "BxDxGxG"),
        ((1, 8, 4, 4), [(65, 64)], "not within the model input 64x64"),
        ((1, 8, 4, 4), [(0, 64)], "not within the model input"),
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

    assert pooled.dtype == np.float16 and pooled.shape == (3, model.config.prompt_embed_dim)
    np.testing.assert_allclose(pooled.astype(np.float32), embed_images(model, photos).astype(np.float32), atol=2e-3)
    assert records == generator.propose(photos)
