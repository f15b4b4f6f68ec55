"""Starting a distributed ``--run``: ``tl-advise --nproc-per-node N`` through torch's elastic launcher
(what ``torchrun --standalone`` runs), and the advice computed once and shared by every rank."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import uuid
from collections.abc import Callable

from tl_advise.advisor.api import AdviceSession
from tl_advise.runners import distributed
from tl_advise.schema.errors import EXIT_INTERRUPTED

logger = logging.getLogger(__name__)


def launch_local(nproc: int, argv: list[str]) -> int:
    """``python -m tl_advise.cli ARGV`` as ``nproc`` processes on this machine, each told its rank
    by torchrun's environment variables; the exit code is the workers' (130 when one was interrupted)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if "OMP_NUM_THREADS" not in os.environ:  # as torchrun: N processes must not each take every core
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)
    logger.info("starting %d processes (OMP_NUM_THREADS=%s each)", nproc, os.environ["OMP_NUM_THREADS"])
    try:
        elastic_launch(config, sys.executable)("-m", "tl_advise.cli", *argv)
    except ChildFailedError as exc:
        codes = [failure.exitcode for failure in exc.failures.values()]
        # A signal shows as a negative code; an interrupt anywhere makes the run an interrupted one.
        if any(code < 0 or code == EXIT_INTERRUPTED for code in codes):
            return EXIT_INTERRUPTED
        return max(codes)
    except SignalException:
        return EXIT_INTERRUPTED
    return 0


PEER_LOST = ("connection closed by peer", "connection reset by peer", "broken pipe", "timed out")


def peer_stopped(exc: BaseException) -> bool:
    """Whether ``exc`` is this rank noticing that another rank of the run stopped (interrupted, killed,
    failed): a collective whose peer went away (gloo says so in a RuntimeError), an NCCL error, or rank 0
    failing at a step every rank waited on."""
    import torch.distributed as dist

    if isinstance(exc, distributed.PeerFailed | dist.DistBackendError):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in PEER_LOST)


def shared_session(make: Callable[[], AdviceSession]) -> AdviceSession:
    """``make()`` — the scan, the measurements, the advice — on rank 0 only; every other rank gets the
    same session (scan, rules, result: the identical recommendation and recipe) with a read-only cache,
    and loads the backbone itself when it needs it."""
    here = distributed.world()
    if not here.distributed:
        return make()
    made: list[AdviceSession] = []

    def portable() -> AdviceSession:
        made.append(make())
        return dataclasses.replace(made[0], _backbone=None)  # the weights load from disk on each rank

    shared = distributed.from_main(portable)
    if here.is_main:
        return made[0]
    return dataclasses.replace(shared, cache=shared.cache.read_only())


def quiet_unless_main(world: distributed.World) -> None:
    """Ranks other than 0 log warnings only, each line marked with its rank (rank 0 speaks for the run)."""
    if world.is_main:
        return
    root = logging.getLogger("tl_advise")
    root.setLevel(max(root.level, logging.WARNING))
    for handler in root.handlers:
        handler.setFormatter(logging.Formatter(f"tl-advise[rank {world.rank}]: %(message)s"))
