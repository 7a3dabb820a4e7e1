"""Several processes: the launch checks and the clean-up when a process fails.

Several nodes: an external launcher (``torchrun``, SLURM's ``srun``) starts every process itself and
sets its world size in the environment. :func:`check_launch` compares it with ``devices × num_nodes``
before any process joins the process group, and checks that the rendezvous port that this process
is to open is free; :class:`EndRanksOnFailure` ends the processes Lightning started when the first
one fails, instead of leaving them waiting on a dead rendezvous.
"""

from __future__ import annotations

import errno
import os
import signal
import socket

from lightning.pytorch.callbacks import Callback

from mnist_lit.errors import LaunchError


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
        tasks, nodes = os.environ.get("SLURM_NTASKS_PER_NODE", "?"), os.environ.get("SLURM_NNODES", "?")
        return world, f"SLURM (SLURM_NTASKS={world})", f"--trainer.devices {tasks} --trainer.num_nodes {nodes}"
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
