"""Several processes, one loop: `torchrun` / `accelerate launch` set WORLD_SIZE, RANK, LOCAL_RANK.

Every rank walks the same seeded global batches and keeps rows `rank::world` of each, so a 2-process run sees
exactly the global batches of a 1-process run with the same `data.batch_size`. Gradients are averaged by DDP,
metrics are summed across ranks from per-rank counts, and only rank 0 touches the run folder. Checkpoints are
read by rank 0 and broadcast, so no shared filesystem is needed and a checkpoint loads on any world size.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from dla.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def where(self, device: torch.device) -> str:
        """Where a run trains, as its banner and results say: 'cuda:0 x 4 processes', or 'cpu'."""
        return f"{device} x {self.world} processes" if self.active else f"{device}"


SINGLE = Dist()


def launched_main() -> bool:
    """True in a plain process and on rank 0 of a launch; what decides who prints and writes summaries."""
    return int(os.environ.get("RANK", "0")) == 0


def init_from_env(device_name: str) -> Dist:
    """Join the process group when launched by torchrun/accelerate; a plain `dla run` is world size 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        # A rank that dies leaves the others in a collective; the timeout bounds how long they wait
        # (torchrun normally ends them sooner, when it sees the failed rank).
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=10))
    return Dist(rank, world, local_rank)


def device_for(d: Dist, device: torch.device) -> torch.device:
    """Each rank drives its own GPU."""
    if d.active and device.type == "cuda":
        return torch.device("cuda", d.local_rank)
    return device


def check_batch(d: Dist, batch_size: int) -> None:
    if batch_size % d.world:
        raise ConfigError(f"data.batch_size={batch_size} is the global batch and must divide by the "
                          f"{d.world} processes; use a multiple of {d.world}")


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.active:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's `obj` on every rank (tensors inside are moved to CPU first)."""
    if not d.active:
        return obj
    box = [obj if d.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, d: Dist) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank ([obj] in a single process)."""
    if not d.active:
        return [obj]
    box: list[Any] = [None] * d.world
    dist.all_gather_object(box, obj)
    return box


def broadcast_buffers(module: torch.nn.Module, d: Dist) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so all ranks evaluate one model.

    DDP keeps parameters identical; buffers drift because each rank updates them on its own rows.
    """
    if not d.active:
        return
    with torch.no_grad():
        for t in module.buffers():
            dist.broadcast(t.data, src=0)


def shutdown(ok: bool) -> None:
    """Leave the process group, if this process joined one.

    On success all ranks meet at a barrier first: gloo aborts a rank that tears the group down while a peer is
    still busy (rank 0 writing plots after the last collective). After an error there is no barrier (a peer may
    be stuck in a collective, and would hold the barrier until the timeout) and no teardown either: the process
    exits with its own code and the launcher stops the rest.
    """
    if ok and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
