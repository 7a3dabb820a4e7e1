"""Data augmentation of training batches: torchvision's transforms v2 in a Lightning callback.

:class:`TrainAugmentation` is added to every trainer by the CLI (``--augment.*``, the ``augment:`` section of
a config); with its defaults it does nothing, so the tutorial's recipe is unchanged. ``configs/best.yaml``
turns the geometric distortions on; ``configs/robust.yaml`` adds what a phone photo does to a digit (blur,
stroke width, ink gamma). It only ever touches training batches: Lightning calls ``on_train_batch_start`` for
training steps alone, so validation, test and predict batches reach the model as the data module made them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback
from torchvision.transforms import v2

from mnist_lit.errors import HyperparameterError


class StrokeWidth(v2.Transform):
    """Thicker or thinner strokes: grey-level dilation or erosion of uint8 (..., 1, H, W) images, one draw a call.

    With probability ``thicken_p`` the images are dilated, else with probability ``thin_p`` eroded, else kept.
    ``window`` is the square neighbourhood, 2 or 3 pixels (2: half a pixel thicker or thinner on each side,
    shifting the ink by half a pixel; 3: a pixel on each side).
    """

    def __init__(self, thicken_p: float, thin_p: float, window: int) -> None:
        super().__init__()
        self.thicken_p, self.thin_p, self.window = thicken_p, thin_p, window

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """``{"way": "thicken" | "thin" | None}`` from one uniform draw of torch's global generator."""
        u = float(torch.rand(()))
        return {"way": "thicken" if u < self.thicken_p else "thin" if u < self.thicken_p + self.thin_p else None}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """The images dilated or eroded (uint8, same shape), or unchanged."""
        if params["way"] is None:
            return inpt
        x = inpt.float().flatten(0, -3).unsqueeze(1)  # (N, 1, H, W): max_pool2d wants one channel axis
        if params["way"] == "thin":
            x = -x
        if self.window == 2:  # pad right/bottom so the 2x2 window keeps H x W (padding -inf: a max ignores it)
            x = F.pad(x, (0, 1, 0, 1), value=-math.inf)
        # torchvision has no morphology: grey-level dilation is a max filter, erosion is -max_pool2d(-x)
        x = F.max_pool2d(x, self.window, stride=1, padding=1 if self.window == 3 else 0)
        if params["way"] == "thin":
            x = -x
        return x.reshape(inpt.shape).round().clamp(0, 255).to(torch.uint8)


class InkGamma(v2.Transform):
    """A gamma change of the ink level, one gamma a call drawn from [1 - spread, 1 + spread].

    Pixels p (uint8) become 255 (p / 255) ** gamma (``v2.functional.adjust_gamma``): gamma < 1 brightens the
    grey halo around the strokes, gamma > 1 darkens it; 0 (background) and 255 stay.
    """

    def __init__(self, spread: float) -> None:
        super().__init__()
        self.spread = spread

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """``{"gamma": g}`` drawn uniformly from torch's global generator."""
        return {"gamma": 1.0 + self.spread * (2 * float(torch.rand(())) - 1)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """The images with the drawn gamma (uint8, same shape)."""
        return v2.functional.adjust_gamma(inpt, params["gamma"])


def stretch_to_full(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 1, H, W) images each stretched linearly so its brightest pixel is 255 (all-0 images stay 0).

    The picture pipeline stretches every crop this way (``mnist_lit.pictures.frame.fit_to_mnist_frame``), so a
    blurred training digit is shown to the model as a blurred photo crop would be.
    """
    peak = images.amax(dim=(-3, -2, -1), keepdim=True).float().clamp(min=1.0)
    return (images.float() * (255.0 / peak)).round().clamp(0, 255).to(torch.uint8)


def _check(degrees, translate, scale, shear, elastic_alpha, elastic_sigma, images_per_draw, photo) -> None:
    """One-line HyperparameterError for the first argument out of its range."""
    blur_sigma, blur_p, thicken_p, thin_p, stroke_window, ink_gamma = photo
    for name, value, ok, allowed in (
        ("degrees", degrees, 0 <= degrees < 90, "in [0, 90)"),
        ("translate", translate, 0 <= translate < 1, "in [0, 1)"),
        ("scale", scale, 0 <= scale < 1, "in [0, 1)"),
        ("shear", shear, 0 <= shear < 90, "in [0, 90)"),
        ("elastic_alpha", elastic_alpha, elastic_alpha >= 0, ">= 0"),
        ("elastic_sigma", elastic_sigma, elastic_sigma > 0, "> 0"),
        ("images_per_draw", images_per_draw, images_per_draw >= 1, ">= 1"),
        ("blur_sigma", blur_sigma, blur_sigma == 0 or 0.1 < blur_sigma <= 4, "0 or in (0.1, 4]"),
        ("blur_p", blur_p, 0 <= blur_p <= 1, "in [0, 1]"),
        ("thicken_p", thicken_p, 0 <= thicken_p <= 1, "in [0, 1]"),
        ("thin_p", thin_p, 0 <= thin_p <= 1 - thicken_p, f"in [0, 1 - thicken_p] = [0, {1 - thicken_p:g}]"),
        ("stroke_window", stroke_window, stroke_window in (2, 3), "2 or 3"),
        ("ink_gamma", ink_gamma, 0 <= ink_gamma < 1, "in [0, 1)"),
    ):
        if not ok:
            raise HyperparameterError(f"augment.{name} must be {allowed}, got {value}")


def _geometry(degrees, translate, scale, shear, elastic_alpha, elastic_sigma) -> list[v2.Transform]:
    """RandomAffine and ElasticTransform steps for the non-zero magnitudes (bilinear, fill 0)."""
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
    return steps


def _photo(blur_sigma, blur_p, thicken_p, thin_p, stroke_window, ink_gamma) -> list[v2.Transform]:
    """Stroke width, blur (then stretched back to a 255 peak) and ink gamma steps for the non-zero settings."""
    steps: list[v2.Transform] = []
    if thicken_p or thin_p:
        steps.append(StrokeWidth(thicken_p, thin_p, stroke_window))
    if blur_sigma and blur_p:
        kernel = 2 * math.ceil(3 * blur_sigma) + 1  # +-3 sigma; at most 25, under the 28-px reflection limit
        blur = v2.GaussianBlur(kernel, sigma=(0.1, blur_sigma))
        steps.append(v2.RandomApply([blur, v2.Lambda(stretch_to_full)], p=blur_p))
    if ink_gamma:
        steps.append(InkGamma(ink_gamma))
    return steps


class TrainAugmentation(Callback):
    """Random distortions of each training batch's images, in place: geometric, and what a photo does to a digit.

    Images stay uint8 (B, 1, 28, 28), 0-255, the model's input contract; labels are not touched. In order:
    torchvision's ``v2.RandomAffine`` (bilinear, empty corners filled with 0, the background) and
    ``v2.ElasticTransform``; :class:`StrokeWidth` (grey-level dilation or erosion); ``v2.GaussianBlur`` followed
    by :func:`stretch_to_full` (the picture pipeline's 255 peak); :class:`InkGamma`. All draw from torch's global
    generator, so runs with the same ``seed_everything`` get the same distortions.

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
        blur_sigma: largest Gaussian blur standard deviation, pixels of the 28x28 image; sigma is drawn from
            [0.1, blur_sigma] (torchvision's lower default), the kernel spans +-3 sigma (0: no blur).
        blur_p: probability that a group is blurred (with ``blur_sigma`` > 0).
        thicken_p: probability that a group's strokes are thickened (grey-level dilation).
        thin_p: probability that they are thinned instead (erosion); ``thicken_p + thin_p`` at most 1.
        stroke_window: the dilation/erosion window, 2 or 3 pixels square.
        ink_gamma: gamma drawn from [1 - ink_gamma, 1 + ink_gamma] for :class:`InkGamma` (0: none).

    With every magnitude and probability 0 (the defaults) the callback does nothing and draws no random numbers.

    Raises:
        HyperparameterError: a negative magnitude, ``degrees``/``shear`` of 90 or more, ``translate`` or
            ``scale`` of 1 or more, ``elastic_sigma`` not positive, ``images_per_draw`` below 1, ``blur_sigma``
            neither 0 nor in (0.1, 4], a probability outside [0, 1] (or ``thin_p`` over ``1 - thicken_p``),
            ``stroke_window`` not 2 or 3, ``ink_gamma`` of 1 or more; at a batch, a batch whose images are not
            uint8 (B, 1, H, W).
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
        blur_sigma: float = 0.0,
        blur_p: float = 0.5,
        thicken_p: float = 0.0,
        thin_p: float = 0.0,
        stroke_window: int = 2,
        ink_gamma: float = 0.0,
    ) -> None:
        photo = (blur_sigma, blur_p, thicken_p, thin_p, stroke_window, ink_gamma)
        _check(degrees, translate, scale, shear, elastic_alpha, elastic_sigma, images_per_draw, photo)
        self.images_per_draw = int(images_per_draw)
        steps = _geometry(degrees, translate, scale, shear, elastic_alpha, elastic_sigma) + _photo(*photo)
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
