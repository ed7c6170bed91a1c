"""The SAM training loop: simulated interactive prompts, multimask loss on the best of three,
focal:dice 20:1, MSE on the IoU head, AdamW; full training or fine-tuning of chosen parts.

Per step, the next `images_per_step` training images (a re-iterable stream: a list, or one that
reads a release as it goes; each pass over it is one epoch, and the next starts when one ends) are
encoded once and `masks_per_image` ground-truth masks of each are prompted for `rounds` decoder
passes: first a point (multimask: the loss is that of the best of the three outputs) or a noisy
box (single output), then one correction point per round from the previous error region, with the
previous low-res logits as the mask prompt (detached, as an interactive user would hand them
back). Losses are taken at the model's input resolution on image pixels only, averaged over rounds.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sam_core.inference import PRECISIONS, autocast
from sam_core.modeling.sam import Sam
from sam_core.training.losses import dice_loss, focal_loss, mask_iou
from sam_core.training.prompts import correction_points, first_points, noisy_boxes
from sam_core.training.samples import Batch, TrainingImage, make_batch

MODEL_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 2000
    images_per_step: int = 4
    masks_per_image: int = 16
    rounds: int = 3
    """Decoder passes per mask: the first prompt, then rounds - 1 correction points (the paper: 11)."""
    box_probability: float = 0.5
    """Chance that a step starts from noisy boxes instead of single points."""
    learning_rate: float = 8e-4
    weight_decay: float = 0.1
    warmup_steps: int = 200
    """Linear warm-up, then cosine decay to 0.1 of the learning rate at the last step."""
    loss_resolution: int | None = None
    """Side at which losses and correction points are computed (None: the model's image size).
    Targets are area-downsampled to it, logits bilinearly upsampled; lower is cheaper on a CPU."""
    max_grad_norm: float | None = 1.0
    focal_weight: float = 20.0
    focal_alpha: float | None = 0.25
    """Foreground weight of the focal loss (None: none). 0.25 weighs background 3x, which can
    hold a model trained from scratch at "no mask anywhere" for a long time."""
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    trainable: tuple[str, ...] = MODEL_PARTS
    """Modules that learn, by name; the rest is frozen. A part, e.g. ("mask_decoder",) to fine-tune
    the decoder, or any module inside one, e.g. ("mask_decoder.iou_prediction_head",)."""
    flip: bool = True
    seed: int = 0
    precision: str = "float32"
    """"float32", or "bfloat16" autocast (CUDA)."""
    log_every: int = 10

    def __post_init__(self) -> None:
        problems = [
            f"{f.name} must be >= 1, got {getattr(self, f.name)}"
            for f in fields(self)
            if f.name in ("steps", "images_per_step", "masks_per_image", "rounds", "log_every")
            and getattr(self, f.name) < 1
        ]
        unknown = sorted(name for name in self.trainable if name.split(".")[0] not in MODEL_PARTS)
        if unknown or not self.trainable:
            problems.append(
                f"trainable must name some of {', '.join(MODEL_PARTS)} or modules inside them, got {self.trainable}"
            )
        if self.precision not in ("float32", "bfloat16"):
            problems.append(f"precision must be float32 or bfloat16, got {self.precision!r}")
        if self.loss_resolution is not None and self.loss_resolution < 8:
            problems.append(f"loss_resolution must be >= 8 or None, got {self.loss_resolution}")
        if not 0.0 <= self.box_probability <= 1.0:
            problems.append(f"box_probability must lie in [0, 1], got {self.box_probability}")
        if problems:
            raise ValueError("invalid TrainSettings: " + "; ".join(problems))


@dataclass(frozen=True)
class StepResult:
    step: int
    loss: float
    focal: float
    dice: float
    iou_mse: float
    first_iou: float
    """Mean true IoU of the chosen mask after the first prompt."""
    last_iou: float
    """... and after the last correction point."""
    learning_rate: float


class NotEnoughImagesError(ValueError):
    """A pass over the training images gave fewer images than one step takes."""


class Trainer:
    """Trains `model` in place on `images` (see `TrainingImage`) with `settings`.

    images: re-iterable; every iteration is one pass (epoch), taken in its order, `images_per_step`
    images per step. The trainer holds only the images of the step in progress, so a stream that
    makes each image when it is reached (`tools.release_samples.ReleaseSamples`) trains in memory
    that does not grow with the number of images.
    """

    def __init__(self, model: Sam, images: Iterable[TrainingImage], settings: TrainSettings) -> None:
        self.model, self.images, self.settings = model, images, settings
        self._pass: Iterator[TrainingImage] | None = None
        self._taken_in_pass = 0
        modules = dict(model.named_modules())
        missing = [name for name in settings.trainable if name not in modules]
        if missing:
            raise ValueError(f"trainable names no module of the model: {', '.join(missing)}")
        model.requires_grad_(False)
        for name in settings.trainable:
            modules[name].requires_grad_(True)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.rng = np.random.default_rng(settings.seed)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.step_index = 0

    def _lr_factor(self, step: int) -> float:
        s = self.settings
        if step < s.warmup_steps:
            return (step + 1) / s.warmup_steps
        progress = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def _autocast(self) -> AbstractContextManager[object]:
        return autocast(self.model.device, PRECISIONS[self.settings.precision])

    def _next_images(self) -> list[TrainingImage]:
        """The next `images_per_step` images of the current pass; when it ends, the next pass begins."""
        wanted = self.settings.images_per_step
        chosen: list[TrainingImage] = []
        while len(chosen) < wanted:
            if self._pass is None:
                self._pass, self._taken_in_pass = iter(self.images), 0
            item = next(self._pass, None)
            if item is None:
                if self._taken_in_pass < wanted:
                    raise NotEnoughImagesError(
                        f"a pass over the training images gave {self._taken_in_pass}, "
                        f"fewer than images_per_step ({wanted})"
                    )
                self._pass = None
                continue
            self._taken_in_pass += 1
            chosen.append(item)
        return chosen

    def next_batch(self) -> Batch:
        return make_batch(
            self._next_images(),
            self.settings.masks_per_image,
            self.model.preprocess,
            self.model.config.image_size,
            self.rng,
            self.settings.flip,
        )

    def step(self) -> StepResult:
        """One optimisation step on a fresh batch."""
        s, model = self.settings, self.model
        model.train()
        batch = self.next_batch()
        device = model.device
        targets, valid = batch.targets.to(device), batch.valid.to(device)
        with self._autocast():
            encoder_learns = any(p.requires_grad for p in model.image_encoder.parameters())
            encode = nullcontext() if encoder_learns else torch.no_grad()
            with encode:
                embeddings = model.image_encoder(batch.images.to(device))
            terms = self._rounds(embeddings[batch.image_index.to(device)], targets, valid)
        loss = terms["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], s.max_grad_norm)
        self.optimizer.step()
        learning_rate = self.optimizer.param_groups[0]["lr"]
        self.schedule.step()
        self.step_index += 1
        values = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in terms.items()}
        return StepResult(self.step_index, **values, learning_rate=learning_rate)

    def _rounds(self, embeddings: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the simulated interaction on N prompts; the losses averaged over rounds."""
        s, model = self.settings, self.model
        rows = torch.arange(len(targets), device=targets.device)
        coords = labels = boxes = mask_input = None
        if self.rng.random() < s.box_probability:
            boxes, outputs = noisy_boxes(targets.cpu(), self.generator).to(targets.device), [0]
        else:
            coords, labels = (t.to(targets.device) for t in first_points(targets.cpu(), self.generator))
            outputs = [1, 2, 3]
        image_size = model.config.image_size
        size = s.loss_resolution or image_size
        if size != image_size:
            targets = F.interpolate(targets[:, None], (size, size), mode="area")[:, 0]
            valid = F.interpolate(valid, (size, size), mode="area")
        scale = image_size / size  # correction points found at the loss resolution, placed at cell centres
        targets_host, valid_host = targets.cpu(), valid.cpu()  # prompts are sampled on the host generator
        image_pe = model.prompt_encoder.get_dense_pe()
        sums = dict.fromkeys(("loss", "focal", "dice", "iou_mse"), 0.0)
        ious = []
        for _ in range(s.rounds):
            points = None if coords is None else (coords, labels)
            sparse, dense = model.prompt_encoder(points, boxes, mask_input)
            low_res, iou_pred = model.mask_decoder.predict(embeddings, image_pe, sparse, dense, outputs)
            logits = F.interpolate(low_res.float(), (size, size), mode="bilinear", align_corners=False)
            truth = targets[:, None]
            focal, dice = focal_loss(logits, truth, valid, s.focal_alpha), dice_loss(logits, truth, valid)
            best = (s.focal_weight * focal + s.dice_weight * dice).argmin(1)
            true_iou = mask_iou(logits, truth, valid)
            iou_mse = ((iou_pred.float() - true_iou) ** 2).mean()
            focal, dice = focal[rows, best].mean(), dice[rows, best].mean()
            sums["loss"] = sums["loss"] + s.focal_weight * focal + s.dice_weight * dice + s.iou_weight * iou_mse
            sums["focal"] += focal.detach()
            sums["dice"] += dice.detach()
            sums["iou_mse"] += iou_mse.detach()
            ious.append(true_iou[rows, best].mean())
            chosen = logits[rows, best].detach()
            new_coords, new_labels = correction_points(chosen.cpu() > 0, targets_host, valid_host, self.generator)
            new_coords = (new_coords * scale + (scale - 1) / 2).to(targets.device)
            new_labels = new_labels.to(targets.device)
            coords = new_coords if coords is None else torch.cat([coords, new_coords], 1)
            labels = new_labels if labels is None else torch.cat([labels, new_labels], 1)
            mask_input = low_res[rows, best][:, None].detach().float()
            outputs = [0]
        terms = {k: v / s.rounds for k, v in sums.items()}
        return {**terms, "first_iou": ious[0], "last_iou": ious[-1]}

    def train(
        self,
        on_step: Callable[[StepResult], None] | None = None,
        checkpoint: Callable[[int], None] | None = None,
        checkpoint_every: int = 0,
    ) -> list[StepResult]:
        """Run the remaining steps, printing progress to stderr every `log_every` steps.

        on_step is called with every result; checkpoint(step) every `checkpoint_every` steps
        (0: never) and after the last.
        """
        progress = ProgressLine(self.settings.steps, self.settings.log_every)
        results = []
        while self.step_index < self.settings.steps:
            result = self.step()
            results.append(result)
            progress.update(result)
            if on_step is not None:
                on_step(result)
            last = self.step_index == self.settings.steps
            if checkpoint is not None and (last or (checkpoint_every and result.step % checkpoint_every == 0)):
                checkpoint(result.step)
        progress.close()
        return results


class ProgressLine:
    """Step, running losses, chosen-mask IoU, speed and time left, on one stderr line."""

    def __init__(self, total: int, every: int) -> None:
        self.total, self.every = total, every
        self.started = time.perf_counter()
        self.window: list[StepResult] = []
        self.tty = sys.stderr.isatty()

    def update(self, result: StepResult) -> None:
        self.window.append(result)
        if result.step % self.every and result.step != self.total:
            return
        n = len(self.window)
        mean = {
            k: sum(getattr(r, k) for r in self.window) / n
            for k in ("loss", "focal", "dice", "iou_mse", "first_iou", "last_iou")
        }
        self.window.clear()
        elapsed = time.perf_counter() - self.started
        rate = result.step / elapsed
        left = (self.total - result.step) / rate if rate else float("nan")
        line = (
            f"train step {result.step}/{self.total} | loss {mean['loss']:.3f} (focal {mean['focal']:.4f} "
            f"dice {mean['dice']:.3f} iou-mse {mean['iou_mse']:.3f}) | mask IoU first {mean['first_iou']:.3f} "
            f"last {mean['last_iou']:.3f} | lr {result.learning_rate:.2e} | {rate:.2f} step/s | "
            f"{int(left // 60)}m{int(left % 60):02d}s left"
        )
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def save_weights(model: Sam, directory: str | Path, stem: str) -> Path:
    """Save the state dict (official layout, float32) as `<stem>_<sha256[:8]>.pth` in `directory`.

    The checksum prefix in the name is what `sam_core.checkpoints` verifies on load.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    partial = directory / f".{stem}.pth.part"
    torch.save(state, partial)
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()
    final = directory / f"{stem}_{digest[:8]}.pth"
    os.replace(partial, final)
    return final
