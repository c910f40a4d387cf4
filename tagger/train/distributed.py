"""torch.distributed helpers for feature extraction and head training under ``torchrun``.

Outside torchrun (no ``RANK``/``WORLD_SIZE`` in the environment) every helper is a no-op for a
single process: rank 0 of 1. Under torchrun the process group uses NCCL when CUDA is available
(each rank on ``cuda:LOCAL_RANK``) and gloo otherwise, so the same code runs as 2 CPU processes.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_objects",
    "barrier",
    "cleanup",
    "init_distributed",
    "is_distributed",
    "is_main",
    "local_device",
    "local_rank",
    "rank",
    "shard",
    "world_size",
]

T = TypeVar("T")


def _under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(backend: str | None = None, timeout_s: float | None = None) -> tuple[int, int]:
    """Join the process group that torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``) and return ``(rank, world_size)``. Not under torchrun, or with
    a world of 1: nothing is initialised and ``(0, 1)`` is returned. Calling it again is harmless.

    ``backend``: default NCCL when CUDA is available, else gloo. ``timeout_s``: how long collectives
    (barriers) wait for the slowest rank; torch's default when None.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if not _under_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return 0, 1
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this build of torch, but WORLD_SIZE > 1")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    options: dict[str, Any] = {}
    if timeout_s is not None:
        options["timeout"] = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(backend=backend, rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]), **options)
    return dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on rank 0, and in a plain single process."""
    return rank() == 0


def local_device() -> str:
    """This rank's device: ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    return f"cuda:{local_rank()}" if torch.cuda.is_available() else "cpu"


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def cleanup() -> None:
    """Leave the process group (no-op when none was initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """This rank's share of ``items``: every ``world``-th item from position ``rank`` (interleaved,
    so long and short clips spread evenly). The shards of all ranks partition ``items``."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    return list(items[rank::world])
