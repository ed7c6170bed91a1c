"""How the model runs, as opposed to what it computes: numeric precision, compilation, batch sizes.

float32 is the reference. bfloat16 and float16 run the encoder and/or the decoder under
autocast; their outputs are cast back to float32 before any threshold, upsampling or score, so
only the network's arithmetic is lower precision. On CUDA that is the fast path; on a CPU
without bfloat16/float16 instructions it works but is several times slower than float32.

The two networks get separate precisions because they tolerate different ones: with the
shipped model and the sa1b preset, bfloat16 in the encoder (and float16 in both) keeps over
99% of the masks, while bfloat16 in the decoder keeps only about 95% (its 8-bit mantissa moves
logits across the stability thresholds). So `auto` on CUDA is a bfloat16 encoder, where
almost all of the FLOPs are, and a float16 decoder.
"""

from __future__ import annotations

import contextlib
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal

import torch

PRECISIONS: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

Precision = Literal["auto", "float32", "bfloat16", "float16"]


def autocast(device: torch.device, dtype: torch.dtype) -> AbstractContextManager[object]:
    """Autocast to `dtype` on `device`'s type; nothing for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class InferenceOptions:
    """Runtime options of mask generation; none changes which masks are asked for, only how
    fast they are computed (and, below float32, their last digits)."""

    encoder_precision: Precision = "float32"
    """Image encoder arithmetic: float32 (reference), bfloat16, float16, or auto (bfloat16 on
    CUDA, float32 elsewhere)."""
    decoder_precision: Precision = "float32"
    """Mask decoder arithmetic: the same choices; auto is float16 on CUDA, float32 elsewhere."""
    compile: bool = False
    """Run the image encoder through torch.compile (first batches slow while it compiles)."""
    encoder_batch_size: int = 4
    """Crops (of one image or of several) embedded per encoder call; activation memory grows
    linearly with it."""
    cleanup_threads: int = field(default_factory=usable_cpus)
    """Masks cleaned up side by side on the CPU in `MaskGenerator.generate` (default: one per
    CPU this process may use)."""

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be auto, {', '.join(PRECISIONS)}; got {value!r}"
            for name, value in (
                ("encoder_precision", self.encoder_precision),
                ("decoder_precision", self.decoder_precision),
            )
            if value != "auto" and value not in PRECISIONS
        ]
        for name in ("encoder_batch_size", "cleanup_threads"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if problems:
            raise ValueError("invalid InferenceOptions: " + "; ".join(problems))

    def encoder_dtype(self, device: torch.device) -> torch.dtype:
        """The encoder's precision resolved for a model on `device`."""
        return _resolve(self.encoder_precision, device, cuda_auto=torch.bfloat16)

    def decoder_dtype(self, device: torch.device) -> torch.dtype:
        """The decoder's precision resolved for a model on `device`."""
        return _resolve(self.decoder_precision, device, cuda_auto=torch.float16)


def _resolve(precision: Precision, device: torch.device, cuda_auto: torch.dtype) -> torch.dtype:
    if precision == "auto":
        return cuda_auto if device.type == "cuda" else torch.float32
    return PRECISIONS[precision]
