"""What a phone photo does to a digit, as training-batch augmentation (issue 17): stroke width, blur, ink gamma
in mnist_lit.augment, on real MNIST test digits; and their arguments' one-line errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO

from mnist_lit.augment import TrainAugmentation, stretch_to_full
from mnist_lit.cli import main
from mnist_lit.data import load_split
from mnist_lit.errors import HyperparameterError

ROBUST = REPO / "configs" / "robust.yaml"


@pytest.fixture(scope="module")
def digits(mnist_dir) -> torch.Tensor:
    """The first 256 real test digits, uint8 (256, 1, 28, 28)."""
    return load_split(mnist_dir, "test")[0][:256]


def ink(images: torch.Tensor) -> torch.Tensor:
    """Ink pixels (> 0) per image, int64 (B,)."""
    return (images > 0).flatten(1).sum(1)


def sharpness(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute 4-neighbour Laplacian per image (the high-frequency part), float32 (B,), grey levels."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    return F.conv2d(images.float(), kernel, padding=1).abs().flatten(1).mean(1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"blur_sigma": 0.05}, "augment.blur_sigma must be 0 or in (0.1, 4], got 0.05"),
        ({"blur_sigma": 5}, "augment.blur_sigma must be 0 or in (0.1, 4], got 5"),
        ({"blur_p": 1.5}, "augment.blur_p must be in [0, 1], got 1.5"),
        ({"thicken_p": -0.1}, "augment.thicken_p must be in [0, 1], got -0.1"),
        ({"thicken_p": 0.6, "thin_p": 0.5}, "augment.thin_p must be in [0, 1 - thicken_p] = [0, 0.4], got 0.5"),
        ({"stroke_window": 4}, "augment.stroke_window must be 2 or 3, got 4"),
        ({"ink_gamma": 1.0}, "augment.ink_gamma must be in [0, 1), got 1.0"),
    ],
)
def test_bad_photo_options_are_one_line_errors(kwargs, message):
    with pytest.raises(HyperparameterError) as error:
        TrainAugmentation(**kwargs)
    assert str(error.value) == message


def test_bad_photo_option_from_the_command_line(tmp_path, capsys, monkeypatch, mnist_dir):
    """Through `fit --config configs/robust.yaml`: exit 2, one line, no run folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROBUST), "--data.data_dir", str(mnist_dir), "--augment.stroke_window=5"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: augment.stroke_window must be 2 or 3, got 5"
    assert not (tmp_path / "lightning_logs").exists() or not any((tmp_path / "lightning_logs").iterdir())


@pytest.mark.parametrize("window", [2, 3])
def test_thicker_strokes_are_a_grey_level_dilation(digits, window):
    """Every pixel at least as bright as before, more ink pixels on every digit; 3x3 thickens more than 2x2."""
    thick = TrainAugmentation(thicken_p=1.0, stroke_window=window).augment(digits)
    assert thick.dtype == torch.uint8 and thick.shape == digits.shape
    assert (thick >= digits).all() and (ink(thick) > ink(digits)).all()
    # a 3x3 max filter reaches the 8 neighbours of each ink pixel: its growth is about 1.7x a digit's ink
    growth = (ink(thick).float() / ink(digits).float()).mean()
    assert (1.2 < growth < 1.5) if window == 2 else (1.5 < growth < 2.0)
    assert thick.amax() == 255 and (thick.flatten(1)[:, 0] == 0).all()  # the background's corner stays black


def test_thinner_strokes_are_a_grey_level_erosion(digits):
    thin = TrainAugmentation(thin_p=1.0, stroke_window=2).augment(digits)
    assert (thin <= digits).all() and (ink(thin) < ink(digits)).all()
    assert (ink(thin) > 0).all()  # a 2x2 erosion keeps some of every digit's strokes


def test_stroke_probabilities_are_drawn_per_group(digits):
    """thicken_p 0.5 and thin_p 0.5, groups of 8: each group all thicker or all thinner, both kinds drawn."""
    torch.manual_seed(0)
    out = TrainAugmentation(thicken_p=0.5, thin_p=0.5, images_per_draw=8).augment(digits)
    ways = []
    for before, after in zip(digits.split(8), out.split(8), strict=True):
        thicker, thinner = bool((after >= before).all()), bool((after <= before).all())
        assert thicker != thinner
        ways.append(thicker)
    assert 8 <= sum(ways) <= 24  # 32 groups, about half each way


def test_blur_softens_the_strokes_and_keeps_a_255_peak(digits):
    """Blurred digits: every image's peak stretched back to 255 (as the picture pipeline does), lower
    high-frequency content, a wider grey halo (fewer near-white pixels among the ink, more ink pixels)."""
    torch.manual_seed(0)
    soft = TrainAugmentation(blur_sigma=1.5, blur_p=1.0, images_per_draw=1).augment(digits)
    assert soft.dtype == torch.uint8 and (soft.flatten(1).amax(1) == 255).all()
    assert sharpness(soft).mean() < 0.8 * sharpness(digits).mean()
    assert (ink(soft) >= ink(digits)).float().mean() > 0.9

    def near_white(images: torch.Tensor) -> float:
        return float((images >= 250).sum()) / float((images > 0).sum())

    assert near_white(digits) > 0.3 and near_white(soft) < 0.2


def test_a_wider_blur_is_softer(digits):
    torch.manual_seed(0)
    mild = TrainAugmentation(blur_sigma=0.6, blur_p=1.0, images_per_draw=1).augment(digits)
    torch.manual_seed(0)
    strong = TrainAugmentation(blur_sigma=3.0, blur_p=1.0, images_per_draw=1).augment(digits)
    assert sharpness(strong).mean() < 0.7 * sharpness(mild).mean() < sharpness(digits).mean()


def test_blur_p_is_the_share_of_groups_blurred(digits):
    torch.manual_seed(0)
    out = TrainAugmentation(blur_sigma=2.0, blur_p=0.25, images_per_draw=1).augment(digits)
    blurred = (out != digits).flatten(1).any(1).float().mean()
    assert 0.15 < blurred < 0.35


def test_stretch_to_full_scales_each_image_to_a_255_peak(digits):
    dim = (digits.float() * 0.5).to(torch.uint8)
    stretched = stretch_to_full(torch.cat([dim, torch.zeros_like(digits[:1])]))
    assert (stretched[:-1].flatten(1).amax(1) == 255).all() and (stretched[-1] == 0).all()
    assert ((stretched[:-1].int() - digits.int()).abs() <= 2).all()  # back to the original within rounding


def test_ink_gamma_keeps_background_and_peak_and_moves_greys_one_way_per_group(digits):
    torch.manual_seed(0)
    out = TrainAugmentation(ink_gamma=0.5, images_per_draw=8).augment(digits)
    assert (out[digits == 0] == 0).all() and (out[digits == 255] == 255).all()
    # gamma 1.5: 255 (v / 255) ** 1.5 < 1 only for v <= 6 (the conversion back to uint8 truncates)
    assert (digits[(out == 0) & (digits > 0)] <= 6).all()
    brighter = []
    for before, after in zip(digits.split(8), out.split(8), strict=True):
        up, down = bool((after >= before).all()), bool((after <= before).all())
        assert up or down
        brighter.append(up and not down)
    assert 0 < sum(brighter) < len(brighter)  # gammas below and above 1 drawn
