"""Data-parallel training throughput and all-reduce bandwidth, under torchrun.

Runs ON the box, one process per GPU (or per CPU slot with gloo), started by
PyTorch's own launcher:

    python -m torch.distributed.run --standalone --nproc-per-node K payload_ddp.py

Each rank trains the D2L model from payload.py with DistributedDataParallel on
its own synthetic Fashion-MNIST-shaped batch; rank 0 prints one JSON line:
images/s of all ranks together and the all-reduce bus bandwidth
(nccl-tests' formula: busbw = algbw x 2(n-1)/n, algbw = bytes / time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

# payload.py sits beside this file on the box: one definition of the D2L models.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from payload import amp_dtype, lenet, resnet18, sync, train_step_fn  # noqa: E402


def bus_bandwidth(nbytes: int, seconds: float, world: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s for an all-reduce of nbytes taking `seconds` on `world` ranks."""
    algbw = nbytes / seconds / 1e9
    return algbw, algbw * 2 * (world - 1) / world


def train(model_name: str, device: torch.device, batch: int, size: int, steps: int,
          capability: str | None) -> float:
    """Seconds for `steps` DDP steps after warm-up (the slowest rank's)."""
    model = (lenet() if model_name == "lenet" else resnet18()).to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    step = train_step_fn(ddp, device, batch, size, amp_dtype(device, capability), 0.05,
                         seed=dist.get_rank())
    for _ in range(2):
        step()
    sync(device)
    dist.barrier()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    took = torch.tensor([time.perf_counter() - began], dtype=torch.float64, device=device)
    dist.all_reduce(took, op=dist.ReduceOp.MAX)
    return float(took.item())


def allreduce(device: torch.device, nbytes: int, repeats: int) -> float:
    """Median seconds of one all-reduce (sum) of nbytes of float32."""
    buf = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    for _ in range(3):
        dist.all_reduce(buf)
    times = []
    for _ in range(repeats):
        sync(device)
        dist.barrier()
        began = time.perf_counter()
        dist.all_reduce(buf)
        sync(device)
        times.append(time.perf_counter() - began)
    took = torch.tensor([statistics.median(times)], dtype=torch.float64, device=device)
    dist.all_reduce(took, op=dist.ReduceOp.MAX)
    return float(took.item())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        props = torch.cuda.get_device_properties(device)
        capability = f"{props.major}.{props.minor}"
        model, batch, size = "resnet18", 128, 96
        steps, nbytes = (5, 64 << 20) if args.quick else (30, 512 << 20)
    else:
        device, capability = torch.device("cpu"), None
        # One core per process, as one GPU per process: K processes use K cores, so the
        # speed-up is the parallel one, not a change in each process's thread count.
        torch.set_num_threads(1)
        model, batch, size = "lenet", 64, 28
        steps, nbytes = (3, 1 << 20) if args.quick else (10, 16 << 20)
    dist.init_process_group("nccl" if cuda else "gloo")
    seconds = train(model, device, batch, size, steps, capability)
    ar_seconds = allreduce(device, nbytes, 5 if args.quick else 20)
    algbw, busbw = bus_bandwidth(nbytes, ar_seconds, world)
    if dist.get_rank() == 0:
        sys.stdout.write(json.dumps({
            "world": world, "backend": dist.get_backend(), "device": device.type,
            "gpu": torch.cuda.get_device_name(device) if cuda else None,
            "model": model, "batch_per_rank": batch, "image_size": size, "steps": steps,
            "seconds": seconds, "images_per_s": world * batch * steps / seconds,
            "allreduce": {"bytes": nbytes, "seconds": ar_seconds,
                          "algbw_gbps": algbw, "busbw_gbps": busbw},
        }) + "\n")
    # Every rank done with its collectives before any tears its connections down: gloo
    # aborts a rank whose peer has gone ("terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip C++ static destructors: with torch 2.13's gloo a rank sometimes aborts at
    # interpreter exit ("terminate called without an active exception", no Python frame
    # left), after all its work is done, and torchrun then reports the run as failed.
    os._exit(code)
