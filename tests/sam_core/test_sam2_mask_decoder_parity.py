"""Our SAM 2.1 mask decoder computes what the public sam2 decoder computes, at identical random weights.

The reference runs through sam2's own `SAM2ImagePredictor._predict` (prompt encoding, box merging,
`repeat_image`) with the SAM 2.1 decoder flags; a hook records the inputs and outputs of its
`sam_mask_decoder`, and our decoder gets the same inputs.
"""

from dataclasses import dataclass

import pytest
import torch
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam.prompt_encoder import PromptEncoder
from sam2.modeling.sam.transformer import TwoWayTransformer
from sam2.sam2_image_predictor import SAM2ImagePredictor
from torch import nn

from sam_core.modeling.sam2_mask_decoder import Sam2MaskDecoder

TOLERANCE = 1e-4
STABILITY_THRESH = 0.98


@dataclass(frozen=True)
class Size:
    dim: int
    num_heads: int
    mlp_dim: int
    iou_head_hidden_dim: int
    grid: int  # image embedding grid; the model input is 16x it


FULL = Size(dim=256, num_heads=8, mlp_dim=2048, iou_head_hidden_dim=256, grid=32)
SMALL = Size(dim=64, num_heads=2, mlp_dim=128, iou_head_hidden_dim=64, grid=16)


def official_decoder(size: Size) -> MaskDecoder:
    """sam2's decoder as SAM2Base builds it with the SAM 2.1 configs and build_sam's overrides."""
    return MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=size.dim, mlp_dim=size.mlp_dim, num_heads=size.num_heads),
        transformer_dim=size.dim,
        iou_head_depth=3,
        iou_head_hidden_dim=size.iou_head_hidden_dim,
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
        dynamic_multimask_via_stability=True,
        dynamic_multimask_stability_delta=0.05,
        dynamic_multimask_stability_thresh=STABILITY_THRESH,
    ).eval()


def ours_for(size: Size) -> Sam2MaskDecoder:
    return Sam2MaskDecoder(
        dim=size.dim,
        num_heads=size.num_heads,
        mlp_dim=size.mlp_dim,
        iou_head_hidden_dim=size.iou_head_hidden_dim,
        stability_thresh=STABILITY_THRESH,
    ).eval()


def randomize(module: nn.Module, generator: torch.Generator, scale: float = 0.1) -> None:
    """Every parameter and buffer to seeded normal noise (norm weights around 1, Fourier frequencies unscaled)."""
    norms = {name for name, sub in module.named_modules() if "Norm" in type(sub).__name__}
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            noise = torch.randn(tensor.shape, generator=generator)
            if "positional_encoding_gaussian_matrix" not in name:
                noise = noise * scale
            if name.endswith(".weight") and name.removesuffix(".weight") in norms:
                noise = noise + 1.0
            tensor.copy_(noise)


class _Sam2Parts(nn.Module):
    """What `SAM2ImagePredictor._predict` reads of a SAM2Base: its prompt encoder, mask decoder, image size."""

    def __init__(self, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder, image_size: int) -> None:
        super().__init__()
        self.sam_prompt_encoder = prompt_encoder
        self.sam_mask_decoder = mask_decoder
        self.image_size = image_size


@dataclass
class Pair:
    ours: Sam2MaskDecoder
    official: MaskDecoder
    predictor: SAM2ImagePredictor
    fpn: tuple[torch.Tensor, torch.Tensor]  # raw finest FPN levels of one image, before conv_s0 / conv_s1
    size: Size


def make_pair(size: Size, seed: int) -> Pair:
    generator = torch.Generator().manual_seed(seed)
    official = official_decoder(size)
    grid, image_size = size.grid, 16 * size.grid
    prompt_encoder = PromptEncoder(
        embed_dim=size.dim,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    ).eval()
    randomize(official, generator)
    randomize(prompt_encoder, generator)
    ours = ours_for(size)
    ours.load_state_dict(official.state_dict(), strict=True)
    official.load_state_dict(ours.state_dict(), strict=True)

    image = torch.randn(1, size.dim, grid, grid, generator=generator)
    fpn = (
        torch.randn(1, size.dim, 4 * grid, 4 * grid, generator=generator),
        torch.randn(1, size.dim, 2 * grid, 2 * grid, generator=generator),
    )
    predictor = SAM2ImagePredictor(_Sam2Parts(prompt_encoder, official, image_size))
    with torch.inference_mode():
        # As SAM2Base.forward_image: the decoder's projections are applied once per image.
        high_res = [official.conv_s0(fpn[0]), official.conv_s1(fpn[1])]
    predictor._features = {"image_embed": image, "high_res_feats": high_res}
    predictor._orig_hw = [(image_size, image_size)]
    predictor._is_image_set = True
    return Pair(ours, official, predictor, fpn, size)


@pytest.fixture(scope="module")
def small() -> Pair:
    return make_pair(SMALL, seed=1)


@pytest.fixture(scope="module")
def full() -> Pair:
    return make_pair(FULL, seed=2)


def prompts(kind: str, count: int, image_size: int, grid: int, seed: int = 3) -> dict[str, torch.Tensor]:
    """`_predict` arguments for `count` prompts of a kind, in the model's input frame."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(count, 3, 2, generator=generator) * image_size
    labels = torch.randint(0, 2, (count, 3), generator=generator)
    corners = torch.rand(count, 2, 2, generator=generator) * image_size
    boxes = torch.cat([corners.min(1).values, corners.max(1).values], dim=1)
    masks = torch.randn(count, 1, 4 * grid, 4 * grid, generator=generator) * 3
    chosen = {
        "point": {"point_coords": points, "point_labels": labels},
        "box": {"boxes": boxes},
        "point+box": {"point_coords": points, "point_labels": labels, "boxes": boxes},
        "point+mask": {"point_coords": points, "point_labels": labels, "mask_input": masks},
        "box+mask": {"boxes": boxes, "mask_input": masks},
        "mask": {"mask_input": masks},
    }
    return {"point_coords": None, "point_labels": None} | chosen[kind]


def run_both(pair: Pair, prompt: dict[str, torch.Tensor], multimask: bool):
    """sam2's `_predict` and ours on what its decoder received: (ours, official) each (masks, iou, object scores)."""
    seen = {}

    def record_inputs(module, args, kwargs):
        seen["inputs"] = kwargs

    def record_outputs(module, args, kwargs, output):
        seen["outputs"] = output

    handles = [
        pair.official.register_forward_pre_hook(record_inputs, with_kwargs=True),
        pair.official.register_forward_hook(record_outputs, with_kwargs=True),
    ]
    try:
        with torch.inference_mode():
            _, predicted_iou, predicted_low_res = pair.predictor._predict(
                **prompt, multimask_output=multimask, return_logits=True
            )
            given = seen["inputs"]
            high_res = pair.ours.project_high_res(*pair.fpn)
            for projected, official_projected in zip(high_res, given["high_res_features"], strict=True):
                assert (projected - official_projected).abs().max().item() <= TOLERANCE
            ours = pair.ours(
                given["image_embeddings"],
                given["image_pe"],
                given["sparse_prompt_embeddings"],
                given["dense_prompt_embeddings"],
                high_res,
                given["multimask_output"],
            )
    finally:
        for handle in handles:
            handle.remove()
    masks, iou, _, object_scores = seen["outputs"]
    assert torch.equal(predicted_iou, iou) and torch.equal(predicted_low_res, masks.clamp(-32, 32))
    return ours, (masks, iou, object_scores)


def single_mask_stability(pair: Pair, prompt: dict[str, torch.Tensor]) -> torch.Tensor:
    """The official stability score of each prompt's single-output (token 0) mask."""
    seen = {}
    handle = pair.official.register_forward_pre_hook(lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True)
    try:
        with torch.inference_mode():
            pair.predictor._predict(**prompt, multimask_output=False, return_logits=True)
            del seen["multimask_output"]
            all_masks = pair.official.predict_masks(**seen)[0]
    finally:
        handle.remove()
    return pair.official._get_stability_scores(all_masks[:, :1]).flatten()


def assert_agree(ours, official, count: int, outputs: int, grid: int) -> None:
    masks, iou, object_scores = ours
    ref_masks, ref_iou, ref_object_scores = official
    assert masks.shape == ref_masks.shape == (count, outputs, 4 * grid, 4 * grid)
    assert iou.shape == ref_iou.shape == (count, outputs)
    assert object_scores.shape == ref_object_scores.shape == (count, 1)
    assert ref_masks.abs().mean() > 0.1
    assert (masks - ref_masks).abs().max().item() <= TOLERANCE
    assert (iou - ref_iou).abs().max().item() <= TOLERANCE
    assert (object_scores - ref_object_scores).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", ["point", "box", "point+box", "point+mask", "box+mask", "mask"])
def test_prompts_against_one_shared_image_agree(small, kind, multimask):
    count = 1 if kind == "mask" else 5  # _predict shares the image only among point or box prompts
    prompt = prompts(kind, count, 16 * small.size.grid, small.size.grid)
    ours, official = run_both(small, prompt, multimask)
    assert_agree(ours, official, count, 3 if multimask else 1, small.size.grid)


def test_full_size_agrees_and_keeps_stable_single_masks(full):
    prompt = prompts("point", 3, 16 * full.size.grid, full.size.grid)
    assert (single_mask_stability(full, prompt) >= STABILITY_THRESH).all()
    for multimask in (True, False):
        ours, official = run_both(full, prompt, multimask)
        assert_agree(ours, official, 3, 3 if multimask else 1, full.size.grid)


def test_unstable_single_masks_fall_back_to_the_best_multimask(small):
    prompt = prompts("point", 5, 16 * small.size.grid, small.size.grid)
    assert (single_mask_stability(small, prompt) < STABILITY_THRESH).all()
    ours, official = run_both(small, prompt, multimask=False)
    _, multi_official = run_both(small, prompt, multimask=True)
    best = multi_official[1].argmax(dim=1)
    rows = torch.arange(5)
    assert torch.equal(official[0][:, 0], multi_official[0][rows, best])
    assert_agree(ours, official, 5, 1, small.size.grid)


def test_one_embedding_per_prompt_mixes_stable_and_unstable_masks(small):
    """B image embeddings and high-res features, as in SAM2Base._forward_sam_heads (repeat_image=False).

    The high-resolution features' amplitude grows across the prompts, and with it the logits'
    magnitude and stability, so that the batch holds prompts on both sides of the threshold.
    """
    size, count = small.size, 8
    generator = torch.Generator().manual_seed(4)
    amplitude = torch.logspace(-1, 2, count)[:, None, None, None]
    image = torch.randn(count, size.dim, size.grid, size.grid, generator=generator)
    fpn_s0 = torch.randn(count, size.dim, 4 * size.grid, 4 * size.grid, generator=generator) * amplitude
    fpn_s1 = torch.randn(count, size.dim, 2 * size.grid, 2 * size.grid, generator=generator)
    points = torch.rand(count, 2, 2, generator=generator) * 16 * size.grid
    labels = torch.randint(0, 2, (count, 2), generator=generator)
    encoder = small.predictor.model.sam_prompt_encoder
    with torch.inference_mode():
        sparse, dense = encoder(points=(points, labels), boxes=None, masks=None)
        image_pe = encoder.get_dense_pe()
        official_high_res = [small.official.conv_s0(fpn_s0), small.official.conv_s1(fpn_s1)]
        all_masks = small.official.predict_masks(image, image_pe, sparse, dense, False, official_high_res)[0]
        stable = small.official._get_stability_scores(all_masks[:, :1]).flatten() >= STABILITY_THRESH
        assert stable.any() and not stable.all()
        high_res = small.ours.project_high_res(fpn_s0, fpn_s1)
        for multimask in (True, False):
            masks, iou, _, object_scores = small.official(
                image, image_pe, sparse, dense, multimask, repeat_image=False, high_res_features=official_high_res
            )
            ours = small.ours(image, image_pe, sparse, dense, high_res, multimask)
            assert_agree(ours, (masks, iou, object_scores), count, 3 if multimask else 1, size.grid)


def test_state_dict_matches_the_official_decoder_at_full_size():
    ours, official = ours_for(FULL).state_dict(), official_decoder(FULL).state_dict()
    assert list(ours) == list(official)
    assert {name: tensor.shape for name, tensor in ours.items()} == {
        name: tensor.shape for name, tensor in official.items()
    }
    assert "transformer.layers.0.mlp.layers.0.weight" in ours and "obj_score_token.weight" in ours
