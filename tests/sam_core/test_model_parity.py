"""Our modules compute what the public segment_anything modules compute, at identical random weights."""

import pytest
import torch

from parity.models import TINY, paired_models
from sam_core import SamConfig

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def models():
    return paired_models(TINY, seed=1)


@pytest.fixture(scope="module")
def embeddings(models):
    ours, official = models
    generator = torch.Generator().manual_seed(2)
    # Non-square, smaller than the input: exercises padding in preprocess and the windows.
    images = torch.rand(2, 3, 256, 171, generator=generator) * 255
    with torch.inference_mode():
        return ours.embed_images(images), official.image_encoder(official.preprocess(images))


def test_image_embeddings_agree(embeddings):
    ours, official = embeddings
    assert ours.shape == official.shape == (2, 256, 16, 16)
    assert official.abs().mean() > 0.1
    assert (ours - official).abs().max().item() <= TOLERANCE


def _prompts(kind: str, count: int = 6) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    points = torch.rand(count, 3, 2, generator=generator) * torch.tensor([171.0, 256.0])
    labels = torch.randint(0, 2, (count, 3), generator=generator)
    corners = torch.rand(count, 2, 2, generator=generator) * torch.tensor([171.0, 256.0])
    boxes = torch.cat([corners.min(1).values, corners.max(1).values], dim=1)
    masks = torch.randn(count, 1, 64, 64, generator=generator) * 3
    chosen = {
        "point": {"point_coords": points, "point_labels": labels},
        "box": {"boxes": boxes},
        "point+box": {"point_coords": points, "point_labels": labels, "boxes": boxes},
        "mask": {"mask_input": masks},
        "point+mask": {"point_coords": points, "point_labels": labels, "mask_input": masks},
    }
    return chosen[kind]


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", ["point", "box", "point+box", "mask", "point+mask"])
def test_decoder_outputs_agree(models, embeddings, kind, multimask):
    ours, official = models
    ours_emb, official_emb = embeddings
    prompts = _prompts(kind)
    with torch.inference_mode():
        logits, iou = ours.decode(ours_emb[:1], multimask_output=multimask, **prompts)
        points = (prompts["point_coords"], prompts["point_labels"]) if "point_coords" in prompts else None
        sparse, dense = official.prompt_encoder(
            points=points, boxes=prompts.get("boxes"), masks=prompts.get("mask_input")
        )
        ref_logits, ref_iou = official.mask_decoder(
            image_embeddings=official_emb[:1],
            image_pe=official.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        masks = ours.postprocess_masks(logits, (256, 171), (400, 267)) > 0
        ref_masks = official.postprocess_masks(ref_logits, (256, 171), (400, 267)) > 0

    outputs = 3 if multimask else 1
    assert logits.shape == ref_logits.shape == (6, outputs, 64, 64)
    assert iou.shape == ref_iou.shape == (6, outputs)
    assert ref_logits.abs().mean() > 0.1
    assert (logits - ref_logits).abs().max().item() <= TOLERANCE
    assert (iou - ref_iou).abs().max().item() <= TOLERANCE
    assert masks.shape == (6, outputs, 400, 267)
    # Logits agree to 1e-4, so masks may differ only where a logit lies within that of the threshold.
    assert (masks != ref_masks).float().mean().item() < 1e-4


def test_full_size_vit_b_forward_agrees():
    ours, official = paired_models(SamConfig.preset("vit_b"), seed=4)
    images = torch.rand(1, 3, 1024, 683, generator=torch.Generator().manual_seed(5)) * 255
    points = torch.tensor([[[300.0, 500.0], [100.0, 900.0]]])
    labels = torch.tensor([[1, 0]])
    with torch.inference_mode():
        embedding = ours.embed_images(images)
        ref_embedding = official.image_encoder(official.preprocess(images))
        logits, iou = ours.decode(embedding, points, labels)
        sparse, dense = official.prompt_encoder(points=(points, labels), boxes=None, masks=None)
        ref_logits, ref_iou = official.mask_decoder(
            image_embeddings=ref_embedding,
            image_pe=official.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
    assert (embedding - ref_embedding).abs().max().item() <= TOLERANCE
    assert (logits - ref_logits).abs().max().item() <= TOLERANCE
    assert (iou - ref_iou).abs().max().item() <= TOLERANCE
