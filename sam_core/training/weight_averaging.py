"""Uniform weight averaging of checkpoints of one run (Izmailov et al. 2018, "Averaging Weights
Leads to Wider Optima and Better Generalization"): the mean of each parameter over checkpoints
taken along a training run often scores better than any one of them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from sam_core.checkpoints import load_sam
from sam_core.modeling.config import SamConfig
from sam_core.modeling.sam import Sam


def average_checkpoints(config: SamConfig | str, checkpoints: Sequence[str | Path]) -> Sam:
    """A model of `config` whose every tensor is the mean of that tensor over `checkpoints`.

    Each checkpoint is loaded (and verified) through `load_sam`, one at a time, and summed in
    float64; tensors that are not floating point must be equal in all of them.
    """
    if len(checkpoints) < 2:
        raise ValueError(f"averaging needs at least two checkpoints, got {len(checkpoints)}")
    model = load_sam(config, checkpoints[0])
    sums = {k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    for checkpoint in checkpoints[1:]:
        for key, value in load_sam(config, checkpoint).state_dict().items():
            if value.is_floating_point():
                sums[key] += value.double()
            elif not torch.equal(value, sums[key]):
                raise ValueError(f"{checkpoint}: {key} differs from {checkpoints[0]} and cannot be averaged")
    current = model.state_dict()
    model.load_state_dict(
        {k: (v / len(checkpoints)).to(current[k].dtype) if v.is_floating_point() else v for k, v in sums.items()}
    )
    return model
