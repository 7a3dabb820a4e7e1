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

Several nodes: an external launcher (``torchrun``, SLURM's ``srun``) starts every process itself and
sets its world size in the environment. :func:`check_launch` compares it with ``devices × num_nodes``
before any process joins the process group, and checks that the rendezvous port that this process
is to open is free; :class:`EndRanksOnFailure` ends the processes Lightning started when the first
one fails, instead of leaving them waiting on a dead rendezvous.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import socket

from lightning.pytorch.callbacks import Callback
from torch.utils.data import Dataset, Sampler

from mnist_lit.errors import DataError, LaunchError


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
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    if world_size_of(trainer) <= 1 or trainer.distributed_sampler_kwargs is None:
        return None
    # Trainer(use_distributed_sampler=...) is kept only on this (private) connector in Lightning 2.x.
    if not getattr(getattr(trainer, "_accelerator_connector", None), "use_distributed_sampler", True):
        return None
    kwargs = trainer.distributed_sampler_kwargs
    return UnrepeatedDistributedSampler(
        dataset, num_replicas=kwargs["num_replicas"], rank=kwargs["rank"], shuffle=False
    )


# ---------------------------------------------------------------------------------------------- launching


def launcher_world_size() -> tuple[int, str, str] | None:
    """The world size an external launcher set up, or ``None`` when this process was not started by one.

    Returns:
        ``(processes, launcher name, hint)``: ``torchrun``'s ``WORLD_SIZE`` (hint: the ``--trainer.devices``
        and ``--trainer.num_nodes`` that match ``LOCAL_WORLD_SIZE``) or SLURM's ``SLURM_NTASKS`` (hint from
        ``SLURM_NTASKS_PER_NODE`` and ``SLURM_NNODES``), detected by Lightning's own cluster environments.
    """
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        world = int(os.environ["WORLD_SIZE"])
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        return (
            world,
            f"torchrun (WORLD_SIZE={world})",
            f"--trainer.devices {per_node} --trainer.num_nodes {max(world // max(per_node, 1), 1)}",
        )
    if SLURMEnvironment.detect() and "SLURM_NTASKS" in os.environ:
        world = int(os.environ["SLURM_NTASKS"])
        per_node, nodes = os.environ.get("SLURM_NTASKS_PER_NODE", "?"), os.environ.get("SLURM_NNODES", "?")
        return world, f"SLURM (SLURM_NTASKS={world})", f"--trainer.devices {per_node} --trainer.num_nodes {nodes}"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the operating system reports free on ``host`` right now (for advice; may be taken later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether binding ``port`` on all IPv4 interfaces fails with ``EADDRINUSE``, as ``torch.distributed``'s
    TCPStore server would (``SO_REUSEADDR`` set like it, so ports in TIME_WAIT count as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


def check_launch(trainer, independent_ok: bool = False) -> None:
    """Refuse, in every process and before any of them opens the process group, a run that cannot start.

    Two cases, each a hang or a traceback in Lightning 2.6 otherwise:

    * an external launcher (``torchrun``, ``srun``) started a different number of processes than
      ``devices × num_nodes``;
    * this process is global rank 0 of a run whose rendezvous port it opens itself (Lightning's own
      launcher or SLURM; ``torchrun``'s agent opens its own) and the port (``MASTER_PORT``) is taken.

    Args:
        trainer (lightning.pytorch.Trainer): the instantiated Trainer (nothing launched yet).
        independent_ok: one process configured (``devices × num_nodes == 1``) under a launcher of many is
            one of many independent workers (``srun -n 4 ... tune``, a fold per task), not a mismatch.

    Raises:
        LaunchError: one of the cases above; the message names the numbers or the port and the fix.
    """
    launched = launcher_world_size()
    # Not trainer.world_size: under a launcher Lightning takes that from the launcher's environment.
    configured = trainer.num_devices * trainer.num_nodes
    if launched is not None and launched[0] != configured and not (independent_ok and configured == 1):
        world, launcher, hint = launched
        raise LaunchError(
            f"{launcher} started {world} processes but --trainer.devices {trainer.num_devices} x "
            f"--trainer.num_nodes {trainer.num_nodes} makes {configured} "
            f"(devices is processes per node); use {hint}"
        )
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if configured <= 1 or environment is None or (launched is not None and "torchrun" in launched[1]):
        return
    if environment.node_rank() != 0 or environment.local_rank() != 0:
        return  # only global rank 0 opens the rendezvous port
    port = environment.main_port  # Lightning's own launcher picks a free one when MASTER_PORT is unset
    if port_in_use(port):
        unset = "" if launched else ", or unset MASTER_PORT and Lightning picks a free one"
        raise LaunchError(
            f"MASTER_PORT {port} is already in use on this machine (another run or program "
            f"holds it); choose a free port, e.g. MASTER_PORT={free_port()}{unset}"
        )


class EndRanksOnFailure(Callback):
    """Ends the processes that Lightning's launcher started when this (global rank 0) process fails.

    Lightning kills them on Ctrl-C only; after any other failure (a rendezvous error, a crash in a
    hook) they would wait in ``init_process_group`` or a collective for its 30-minute timeout,
    orphaned. They get ``SIGKILL``, the signal Lightning itself uses for this (``SIGTERM`` does not stop
    a process blocked in a collective). Processes started by ``torchrun``/``srun`` are their
    launcher's to end.
    """

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        for proc in getattr(getattr(trainer.strategy, "launcher", None), "procs", None) or []:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
