"""Data augmentation of training batches: torchvision's transforms v2 in a Lightning callback.

:class:`TrainAugmentation` is added to every trainer by the CLI (``--augment.*``, the ``augment:`` section of
a config); with its defaults it does nothing, so the tutorial's recipe is unchanged. ``configs/best.yaml``
turns it on. It only ever touches training batches: Lightning calls ``on_train_batch_start`` for training
steps alone, so validation, test and predict batches reach the model as the data module made them.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback
from torchvision.transforms import v2

from mnist_lit.errors import HyperparameterError


class TrainAugmentation(Callback):
    """Random small affine (and optionally elastic) distortions of each training batch's images, in place.

    Images stay uint8 (B, 1, 28, 28), 0-255, the model's input contract; labels are not touched. The
    transforms are torchvision's ``v2.RandomAffine`` (bilinear, empty corners filled with 0, the
    background) and ``v2.ElasticTransform``, drawing from torch's global generator, so runs with
    the same ``seed_everything`` get the same distortions.

    torchvision v2 draws one set of random parameters per call, so a batch given as a whole would get
    one distortion. Here the batch (already shuffled) is cut into groups of ``images_per_draw`` images
    and each group gets its own draw: ``1`` gives every image its own, at the highest CPU cost (one
    transform call per image); larger groups cost proportionally fewer calls. Measured costs: ``docs/best.md``.

    Args:
        degrees: rotation drawn from [-degrees, degrees] (0: none).
        translate: shift drawn from [-translate, translate] x 28 pixels, each axis (0: none).
        scale: zoom factor drawn from [1 - scale, 1 + scale] (0: none).
        shear: shear angle drawn from [-shear, shear] degrees along x (0: none).
        elastic_alpha: ``v2.ElasticTransform`` ``alpha`` (displacement magnitude; 0: no elastic distortion).
        elastic_sigma: its ``sigma`` (smoothness of the displacement field, pixels).
        images_per_draw: images of a batch that share one random draw (1: every image its own).

    With every magnitude 0 (the defaults) the callback does nothing and draws no random numbers.

    Raises:
        HyperparameterError: a negative magnitude, ``degrees``/``shear`` of 90 or more, ``translate`` or
            ``scale`` of 1 or more, ``elastic_sigma`` not positive, ``images_per_draw`` below 1; at a batch,
            a batch whose images are not uint8 (B, 1, H, W).
    """

    def __init__(
        self,
        degrees: float = 0.0,
        translate: float = 0.0,
        scale: float = 0.0,
        shear: float = 0.0,
        elastic_alpha: float = 0.0,
        elastic_sigma: float = 4.0,
        images_per_draw: int = 8,
    ) -> None:
        for name, value, ok, allowed in (
            ("degrees", degrees, 0 <= degrees < 90, "in [0, 90)"),
            ("translate", translate, 0 <= translate < 1, "in [0, 1)"),
            ("scale", scale, 0 <= scale < 1, "in [0, 1)"),
            ("shear", shear, 0 <= shear < 90, "in [0, 90)"),
            ("elastic_alpha", elastic_alpha, elastic_alpha >= 0, ">= 0"),
            ("elastic_sigma", elastic_sigma, elastic_sigma > 0, "> 0"),
            ("images_per_draw", images_per_draw, images_per_draw >= 1, ">= 1"),
        ):
            if not ok:
                raise HyperparameterError(f"augment.{name} must be {allowed}, got {value}")
        self.images_per_draw = int(images_per_draw)
        steps: list[v2.Transform] = []
        if degrees or translate or scale or shear:
            steps.append(
                v2.RandomAffine(
                    degrees=degrees,
                    translate=(translate, translate) if translate else None,
                    scale=(1 - scale, 1 + scale) if scale else None,
                    shear=shear or None,
                    interpolation=v2.InterpolationMode.BILINEAR,
                    fill=0,
                )
            )
        if elastic_alpha:
            steps.append(
                v2.ElasticTransform(
                    alpha=elastic_alpha, sigma=elastic_sigma, interpolation=v2.InterpolationMode.BILINEAR, fill=0
                )
            )
        #: The torchvision transform applied to each group, or ``None`` (augmentation off).
        self.transform: v2.Transform | None = v2.Compose(steps) if steps else None

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """A distorted copy of uint8 ``images`` (B, 1, H, W): each group of ``images_per_draw`` its own draw."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 1:
            raise HyperparameterError(
                f"augment: expected training images uint8 (B, 1, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if self.transform is None:
            return images.clone()
        with torch.no_grad():
            return torch.cat([self.transform(group) for group in images.split(self.images_per_draw)])

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Replace the images of the training batch ``(images, labels)`` by :meth:`augment`'s, in place.

        In place, because a callback cannot hand Lightning a new batch; the batch's image tensor is the data
        module's own copy for this batch (``InMemoryDataset`` indexes with a tensor, which copies), so the
        data set itself never changes.
        """
        if self.transform is not None:
            batch[0].copy_(self.augment(batch[0]))
