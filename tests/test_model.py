"""The tutorial's network and its LightningModule: shapes, parameters, init, loss, optimizer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mnist_lit.data import load_split
from mnist_lit.errors import HyperparameterError
from mnist_lit.model import CLASS_NAMES, MNISTClassifier, SeedCNN, scale_pixels


def real_batch(mnist_dir, n=512):
    """uint8 pixels (n, 1, 28, 28), the LightningModule's input, and labels; SeedCNN takes scale_pixels(pixels)."""
    images, labels = load_split(mnist_dir, "test")
    return images[:n], labels[:n]


def test_parameter_count_matches_keras_summary():
    assert sum(p.numel() for p in SeedCNN().parameters()) == 225_034


def test_layers_are_the_tutorials():
    net = SeedCNN()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    denses = [m for m in net.modules() if isinstance(m, nn.Linear)]
    drops = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 32, (3, 3), (0, 0)),
        (32, 64, (3, 3), (0, 0)),
    ]
    assert [(d.in_features, d.out_features) for d in denses] == [(1600, 128), (128, 10)]
    assert drops == [0.25, 0.5]


def test_keras_style_initialisation():
    torch.manual_seed(0)
    for module in SeedCNN().modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight.detach()
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
            bound = math.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform limit
            assert 0.95 * bound < float(weight.abs().max()) <= bound
            assert abs(float(weight.std()) - bound / math.sqrt(3)) < 0.1 * bound / math.sqrt(3)  # std of U(-b, b)
            assert torch.count_nonzero(module.bias) == 0


def test_logits_shape_and_they_are_not_probabilities(mnist_dir):
    images, _ = real_batch(mnist_dir, 64)
    with torch.no_grad():
        logits = SeedCNN().eval()(scale_pixels(images))
    assert logits.shape == (64, 10) and logits.dtype == torch.float32
    assert not torch.allclose(logits.sum(dim=1), torch.ones(64), atol=1e-3)
    assert float(logits.min()) < 0  # softmax outputs are never negative


def test_initial_loss_is_about_ln_10(mnist_dir):
    torch.manual_seed(0)
    images, labels = real_batch(mnist_dir)
    with torch.no_grad():
        loss = nn.functional.cross_entropy(SeedCNN().eval()(scale_pixels(images)), labels)
    assert abs(float(loss) - math.log(10)) < 0.15


def test_optimizer_uses_keras_rmsprop_defaults():
    optimizer = MNISTClassifier().configure_optimizers()
    assert isinstance(optimizer, torch.optim.RMSprop)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"], group["momentum"], group["centered"]) == (
        0.001,
        0.9,
        1e-7,
        0,
        False,
    )
    custom = MNISTClassifier(lr=0.01, rho=0.8, eps=1e-6).configure_optimizers().param_groups[0]
    assert (custom["lr"], custom["alpha"], custom["eps"]) == (0.01, 0.8, 1e-6)


def test_predict_step_returns_probabilities_and_digits(mnist_dir):
    images, labels = real_batch(mnist_dir, 32)
    out = MNISTClassifier().eval().predict_step((images, labels), 0)
    assert out["probs"].shape == (32, 10) and out["preds"].shape == (32,)
    assert torch.allclose(out["probs"].sum(dim=1), torch.ones(32), atol=1e-5)
    assert torch.equal(out["preds"], out["probs"].argmax(dim=1)) and out["preds"].dtype == torch.int64


def test_dropout_rates_are_hyperparameters():
    model = MNISTClassifier(dropout1=0.1, dropout2=0.2)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.1, 0.2]
    assert dict(model.hparams) == {
        "lr": 1e-3,
        "rho": 0.9,
        "eps": 1e-7,
        "dropout1": 0.1,
        "dropout2": 0.2,
        "pixel_scale": "unit",
        "dataset": "mnist",
        "label_smoothing": 0.0,
        "weight_decay": 0.0,
        "lr_schedule": "constant",
        "warmup_fraction": 0.3,
    }


def test_infinite_hyperparameters_are_refused():
    """``--model.lr 1e400`` reads as inf, which ``lr > 0`` let through: NaN from the first step."""
    for name in ("lr", "eps", "weight_decay"):
        with pytest.raises(HyperparameterError, match=rf"^model\.{name} must be a finite number [^,]+, got inf$"):
            MNISTClassifier(**{name: math.inf})


def test_the_module_scales_its_own_uint8_input(mnist_dir):
    """The input contract lives in the module: uint8 pixels in, scaled by its pixel_scale, floats refused."""
    images, _ = real_batch(mnist_dir, 16)
    unit, raw = MNISTClassifier(pixel_scale="unit").eval(), MNISTClassifier(pixel_scale="raw").eval()
    raw.load_state_dict(unit.state_dict())
    with torch.no_grad():
        assert torch.allclose(unit(images), unit.net(images.float() / 255), atol=1e-6)
        assert torch.allclose(raw(images), unit.net(images.float()), atol=1e-4)
        assert not torch.allclose(unit(images), raw(images))  # the same weights, another contract
    with pytest.raises(HyperparameterError, match="uint8"):
        unit(images.float())
    with pytest.raises(HyperparameterError, match="pixel_scale"):
        MNISTClassifier(pixel_scale="zscore")
    assert MNISTClassifier(dataset="fashion_mnist").class_names[9] == "Ankle boot" == CLASS_NAMES["fashion_mnist"][9]


def tutorial_order_forward(net: SeedCNN, x: torch.Tensor) -> torch.Tensor:
    """The tutorial's literal order, Conv -> ReLU -> MaxPool, with the same weights (eval mode: no dropout)."""
    conv1, conv2 = net.features[0], net.features[3]
    dense1, dense2 = net.classifier[1], net.classifier[4]
    x = nn.functional.max_pool2d(nn.functional.relu(conv1(x)), 2)
    x = nn.functional.max_pool2d(nn.functional.relu(conv2(x)), 2)
    return dense2(nn.functional.relu(dense1(x.flatten(1))))


def test_pool_before_relu_gives_the_tutorials_outputs_and_gradients(mnist_dir):
    images, labels = real_batch(mnist_dir, 256)
    images = scale_pixels(images)
    torch.manual_seed(0)
    net = SeedCNN().eval()
    ours = nn.functional.cross_entropy(net(images), labels)
    ours_grads = torch.autograd.grad(ours, list(net.parameters()))
    reference = nn.functional.cross_entropy(tutorial_order_forward(net, images), labels)
    reference_grads = torch.autograd.grad(reference, list(net.parameters()))
    assert torch.allclose(ours, reference, atol=1e-6)
    for got, want in zip(ours_grads, reference_grads, strict=False):
        assert torch.allclose(got, want, atol=1e-6)


def test_epoch_metrics_cover_the_steps_that_ran_when_max_steps_stops_the_epoch(mnist_dir):
    """train_loss is the mean over exactly the images trained on, also when the epoch stops early."""
    from lightning.pytorch import Callback, Trainer, seed_everything

    from mnist_lit.data import MNISTDataModule

    class StepLosses(Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses.append(float(outputs["loss"]))

    seed_everything(0)
    steps = StepLosses()
    trainer = Trainer(
        max_steps=7,
        limit_train_batches=20,
        limit_val_batches=0,
        logger=False,
        callbacks=[steps],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(MNISTClassifier(), datamodule=MNISTDataModule(data_dir=mnist_dir, download=False))
    assert len(steps.losses) == 7  # 7 of the epoch's 20 batches, all of 128 images
    assert math.isclose(float(trainer.callback_metrics["train_loss"]), sum(steps.losses) / 7, rel_tol=1e-5)
    assert 0.0 < float(trainer.callback_metrics["train_acc"]) < 1.0


def test_a_nan_loss_makes_the_epoch_loss_nan_not_left_out():
    """A diverging run (``--model.lr 1e30``) has NaN losses in some steps: torchmetrics' default left them out with a
    warning, so the epoch's train_loss read as a finite mean of the other steps. The mean over all images is NaN."""
    model = MNISTClassifier()
    for metrics in (model.train_metrics, model.val_metrics, model.test_metrics):
        metrics["loss"].update(torch.tensor(2.3), 128)
        metrics["loss"].update(torch.tensor(math.nan), 128)
        assert math.isnan(float(metrics["loss"].compute()))
    model.train_metrics["loss"].reset()
    model.train_metrics["loss"].update(torch.tensor(2.0), 96)
    model.train_metrics["loss"].update(torch.tensor(4.0), 32)
    assert float(model.train_metrics["loss"].compute()) == pytest.approx(2.5)  # weighted by images, as before
