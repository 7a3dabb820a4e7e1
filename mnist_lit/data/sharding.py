"""Several processes (DDP): how the global batch is split and how evaluation data is sharded.

Lightning's ``ddp`` strategy (``torch.distributed``) runs one process per device. It already
shards the *training* data: when ``use_distributed_sampler`` is on (the default) it replaces the
training loader's sampler by a ``DistributedSampler(shuffle=True, seed=PL_GLOBAL_SEED)`` and calls
its ``set_epoch`` at every epoch (``lightning/pytorch/loops/fit_loop.py``), so each rank gets a
disjoint ``1 / world_size`` share, reshuffled every epoch. For validation and test it would also
inject a ``DistributedSampler``, which *pads* the last shard with repeated images so that all ranks
get the same count (10,000 test images on 3 ranks would count 10,002). :func:`eval_sampler` gives
those loaders Lightning's ``UnrepeatedDistributedSampler`` instead (the one Lightning itself uses
for ``predict``): rank ``r`` of ``W`` gets images ``r, r + W, r + 2W, ...``, each image exactly once,
and shards differ in length by at most one image. A loader whose sampler already is a
``DistributedSampler`` is left alone by Lightning
(``DataConnector._requires_distributed_sampler`` in ``trainer/connectors/data_connector.py``).

Uneven evaluation shards are safe here: metrics are reduced over ranks only at epoch end
(torchmetrics ``MulticlassAccuracy`` sums its counts; ``self.log(..., sync_dist=True)`` weights the
loss by ``batch_size``), and ``SeedCNN`` has no buffers, so ``DistributedDataParallel``'s forward
does no collective call per batch that a rank with one batch fewer could leave waiting.
"""

from __future__ import annotations

import math

from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset, Sampler

from mnist_lit.errors import DataError


def world_size_of(trainer) -> int:
    """Number of processes the trainer runs (``devices * num_nodes``); 1 without a trainer."""
    return int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1


def per_device_batch_size(batch_size: int, world_size: int, training: bool) -> int:
    """Split the global ``batch_size`` (images per optimizer step, all devices together) over the ranks.

    Training needs an exact split, so that the effective batch (and with it the learning dynamics)
    is what the config says whatever the number of devices: 128 on 2 devices is 64 per device.
    Evaluation results do not depend on batching, so there the split is rounded up.

    Args:
        batch_size: global batch size, images (tutorial: 128).
        world_size: number of processes, 1 or more.
        training: ``True`` for the training loader (exact split required).

    Returns:
        images per batch on each device: ``batch_size // world_size`` for training,
        ``ceil(batch_size / world_size)`` for evaluation.

    Raises:
        DataError: training with a ``batch_size`` that ``world_size`` does not divide.
    """
    if world_size <= 1:
        return batch_size
    if training and batch_size % world_size:
        lower, upper = batch_size // world_size * world_size, math.ceil(batch_size / world_size) * world_size
        raise DataError(
            f"data.batch_size={batch_size} is the global batch (all devices together) and must be "
            f"divisible by the {world_size} processes; use --data.batch_size {lower or world_size} "
            f"or {upper}"
        )
    return math.ceil(batch_size / world_size)


def eval_sampler(dataset: Dataset, trainer) -> Sampler | None:
    """A sampler that shards ``dataset`` over the ranks without padding, or ``None`` on one process.

    Args:
        dataset: a sized evaluation data set (validation, test or predict).
        trainer (lightning.pytorch.Trainer | None): the attached Trainer, or ``None``.

    Returns:
        ``UnrepeatedDistributedSampler(dataset, num_replicas=W, rank=r, shuffle=False)`` when the
        trainer runs ``W > 1`` processes of a parallel strategy and ``use_distributed_sampler`` is on
        (Lightning's default); otherwise ``None`` (plain sequential order, which Lightning then
        handles itself; with ``use_distributed_sampler=False`` the user shards the data).
    """
    if world_size_of(trainer) <= 1 or trainer.distributed_sampler_kwargs is None:
        return None
    # Trainer(use_distributed_sampler=...) is kept only on this (private) connector in Lightning 2.x.
    if not getattr(getattr(trainer, "_accelerator_connector", None), "use_distributed_sampler", True):
        return None
    kwargs = trainer.distributed_sampler_kwargs
    return UnrepeatedDistributedSampler(
        dataset, num_replicas=kwargs["num_replicas"], rank=kwargs["rank"], shuffle=False
    )
