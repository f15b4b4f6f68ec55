"""Data-parallel ``--run`` under torchrun: who this process is, and the few collectives the runners need.

torchrun (or ``tl-advise --nproc-per-node N``) starts one process per device and describes the job in
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. ``process_group`` joins it
(nccl on CUDA, gloo on CPU); without those variables every helper here is the one-process identity —
rank 0 of 1, no collective — so the runners have a single code path.

The batch rule: the recipe's batch size is the **effective** batch. Each of the N processes takes
``ceil(batch / N)`` images per step, so the gradient DistributedDataParallel averages is the gradient of
the batch the recipe names, and the learning rates apply unchanged (no LR scaling). To train with a
bigger effective batch, raise ``--batch-size`` and scale the LR yourself.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from tl_advise.schema.errors import ConfigError, TLAdviseError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The autograd all-reduce that _WholeBatchNorm needs is still there, only marked for a future move.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce is deprecated",
                        category=FutureWarning)

LR_SCALING = ("none: the effective batch is the recipe's batch, split across the processes, so the recipe's "
              "learning rates apply unchanged")
COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # rank 0 computes the advice while the others wait


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank ``rank`` of ``size`` (``local_rank`` on its node)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_world() -> World:
    """What torchrun's environment says this process is (rank 0 of 1 outside torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    return World(rank=int(os.environ.get("RANK", "0")), size=size,
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def world() -> World:
    """The process group this process has joined; rank 0 of 1 when it has joined none."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(rank=dist.get_rank(), size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def backend_for(device: str) -> str:
    """nccl when the processes train on CUDA, gloo on the CPU."""
    wants_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "nccl" if wants_cuda and torch.cuda.is_available() else "gloo"


@contextmanager
def process_group(device: str) -> Iterator[World]:
    """Join torchrun's process group for the duration (nothing outside torchrun); leave it after.

    On CUDA each process takes the device ``LOCAL_RANK``, so ``torch.device("cuda")`` is its own GPU.
    """
    launched = launched_world()
    if not launched.distributed or dist.is_initialized():
        yield world()
        return
    backend = backend_for(device)
    if backend == "nccl":
        if launched.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"process {launched.rank} has LOCAL_RANK {launched.local_rank} but only "
                              f"{torch.cuda.device_count()} CUDA device(s) are visible: start at most that "
                              "many processes per node (--nproc-per-node)")
        torch.cuda.set_device(launched.local_rank)
    dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    logger.debug("joined the process group: rank %d of %d (%s)", launched.rank, launched.size, backend)
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def training_device(device: torch.device) -> torch.device:
    """CUDA as the indexed device of this process (DDP and set_device need the index)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


# --------------------------------------------------------------------------- collectives


class PeerFailed(RuntimeError):
    """Rank 0 failed at a step every rank waited on; the other ranks stop with this."""


def from_main(compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0 only, its value (or its error) handed to every rank.

    A ``TLAdviseError`` on rank 0 is raised on every rank (each exits 2 with the same message), so no
    rank is left waiting for a value that will never come.
    """
    here = world()
    if not here.distributed:
        return compute()
    box: list[Any] = [None]
    error: BaseException | None = None
    if here.is_main:
        try:
            box[0] = ("ok", compute())
        except TLAdviseError as exc:
            error, box[0] = exc, ("error", exc)
        except Exception as exc:
            error, box[0] = exc, ("failed", f"{type(exc).__name__}: {exc}")
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if error is not None:
        raise error
    if kind == "error":
        raise value
    if kind == "failed":
        raise PeerFailed(f"rank 0 failed: {value}")
    return value


def gather(value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank."""
    here = world()
    if not here.distributed:
        return [value]
    out: list[Any] = [None] * here.size
    dist.all_gather_object(out, value)
    return out


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank (for decisions every rank must take together)."""
    here = world()
    if not here.distributed:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def sync_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank. DDP syncs them at the start of a
    training forward only, so after an epoch each rank holds its last batch's update."""
    if world().distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


class _WholeBatchNorm:
    """Batch norm that, in training mode, normalises with the statistics of the effective batch (every
    rank's images of the step) — what the one-process run computes. The sums are all-reduced with
    autograd, so the gradient flows to every rank's inputs. torch's SyncBatchNorm does the same on
    CUDA only; this works with gloo on the CPU too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn: Any = self
        if not (bn.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)  # type: ignore[misc]
        from torch.distributed.nn.functional import all_reduce  # differentiable

        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_tensor([xf.numel() // channels])])
        total = all_reduce(local)
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels:2 * channels] / n - mean * mean).clamp_min(0)
        if bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                bn.num_batches_tracked += 1
                momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                bn.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                bn.running_var.mul_(1 - momentum).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
        if bn.affine:
            y = y * bn.weight.view(shape) + bn.bias.view(shape)
        return y.to(x.dtype)


class _WholeBatchDropout:
    """Dropout whose mask is this rank's rows of the mask the one-process run draws for the whole batch.

    Rank r's images of a step are rows r, r + N, … of the one-process batch (``ShardedShuffle``), and
    every rank draws the same full mask from the same seeded stream, so where nothing else draws random
    numbers during a step (the feature-extraction head) the distributed run computes what one process
    does. Elsewhere (augmentation draws per image) the streams part and the masks are just random."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer: Any = self
        if not (layer.training and layer.p > 0 and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)  # type: ignore[misc]
        size, rank = dist.get_world_size(), dist.get_rank()
        keep = 1 - layer.p
        mask = torch.empty((x.shape[0] * size, *x.shape[1:]), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask[rank::size].div_(keep)


_WHOLE_BATCH_CLASSES: dict[type, type] = {}


def whole_batch_layers(module: torch.nn.Module) -> torch.nn.Module:
    """In a distributed run, make the batch-norm and dropout layers of ``module`` behave over the effective
    batch (``_WholeBatchNorm``, ``_WholeBatchDropout``). The layers keep their identity, parameters,
    buffers and state-dict keys (their class becomes a subclass of their own), so the freezing plan and
    the saved model are unchanged."""
    if not world().distributed:
        return module
    for layer in module.modules():
        kind = type(layer)
        if isinstance(layer, _WholeBatchNorm | _WholeBatchDropout):
            continue
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            mixin: type = _WholeBatchNorm
        elif isinstance(layer, torch.nn.Dropout):
            mixin = _WholeBatchDropout
        else:
            continue
        if kind not in _WHOLE_BATCH_CLASSES:
            _WHOLE_BATCH_CLASSES[kind] = type(f"WholeBatch{kind.__name__}", (mixin, kind), {})
        layer.__class__ = _WHOLE_BATCH_CLASSES[kind]
    return module


def barrier() -> None:
    if world().distributed:
        dist.barrier()


# --------------------------------------------------------------------------- shards


def shard(items: Sequence[T]) -> list[T]:
    """This rank's part of ``items``: every size-th item from its rank on, never padded."""
    here = world()
    return list(items[here.rank::here.size])


def unshard(parts: Sequence[Sequence[T]]) -> list[T]:
    """The inverse of ``shard`` over all ranks' parts (``parts[r]`` from rank r): the original order."""
    out: list[T] = []
    longest = max((len(p) for p in parts), default=0)
    for i in range(longest):
        out.extend(part[i] for part in parts if i < len(part))
    return out


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """The rows of a sharded tensor (row i of rank r = item r + i·size) back in the original order."""
    here = world()
    if not here.distributed:
        return tensor
    parts = gather(tensor.cpu())
    rows = unshard([list(part) for part in parts])
    return torch.stack(rows) if rows else tensor[:0]


# --------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class BatchSplit:
    """How the recipe's batch is split across the processes (see the module docstring)."""

    world_size: int
    per_rank: int
    effective: int

    @classmethod
    def of(cls, batch_size: int, world_size: int) -> BatchSplit:
        per_rank = math.ceil(batch_size / world_size)
        if world_size > 1 and per_rank < 2:
            raise ConfigError(
                f"a batch of {batch_size} over {world_size} processes leaves {per_rank} image per process, and "
                f"batch norm needs at least 2: use --batch-size {2 * world_size} or more, or fewer processes")
        return cls(world_size=world_size, per_rank=per_rank, effective=per_rank * world_size)


class ShardedShuffle(torch.utils.data.DistributedSampler[int]):
    """This rank's part of one epoch's shuffled order, the order being exactly the one-process run's.

    ``order(epoch)`` is the permutation the one-process loader trains epoch ``epoch`` in; rank r takes
    items r, r + N, r + 2N, … of it (padded with its first items to a multiple of N, as
    ``DistributedSampler`` pads), so at every step the N ranks' batches of ``ceil(batch / N)`` together
    are the one-process batch of that step. ``set_epoch`` picks the epoch, as for ``DistributedSampler``.
    """

    def __init__(self, n: int, order: Callable[[int], list[int]], *, rank: int | None = None,
                 size: int | None = None) -> None:
        here = world()
        super().__init__(_Length(n), num_replicas=here.size if size is None else size,
                         rank=here.rank if rank is None else rank, shuffle=True, drop_last=False)
        self.order = order

    def __iter__(self) -> Iterator[int]:
        indices = list(self.order(self.epoch))
        while len(indices) < self.total_size:
            indices += indices[: self.total_size - len(indices)]
        return iter(indices[self.rank:self.total_size:self.num_replicas])


class _Length(torch.utils.data.Dataset[int]):
    """Only a length: what ``DistributedSampler`` needs of a dataset to size the shards."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index
