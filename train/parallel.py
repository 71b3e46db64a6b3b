"""Where the network runs: one device, two towers (§3.2), or DDP replicas.

* ``none``: the grouped :class:`~alexnet_kit.model.AlexNet` on one device.
* ``model``: :class:`~alexnet_kit.towers.TowerAlexNet`, one tower per device,
  exactly the paper's two-GPU split: activations cross devices only at the
  inputs of conv3, fc6, fc7 and fc8.
* ``data``: :class:`torch.nn.parallel.DistributedDataParallel` under
  ``torchrun``: NCCL on GPUs, gloo on CPU. Each rank takes its slice of every
  global batch (see :mod:`alexnet_kit.train.loader`) and gradients are averaged,
  so N ranks compute the step of one process with the whole batch.

Whatever the form, weights and optimizer velocities are saved under the
grouped model's parameter names, so a checkpoint resumes in any form.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from alexnet_kit.errors import AlexKitError
from alexnet_kit.model import AlexNet, AlexNetConfig
from alexnet_kit.towers import TowerAlexNet

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def process_group_backend(device_kind: str) -> str:
    """NCCL for the CUDA tensors, gloo for any CPU tensor (a stray CPU collective works instead of failing)."""
    return "cpu:gloo,cuda:nccl" if device_kind == "cuda" else "gloo"


def init_distributed(device_kind: str) -> DistInfo:
    """Join the torchrun job, each rank bound to its own GPU before NCCL starts."""
    import torch.distributed as dist

    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        raise AlexKitError("--parallel data runs under torchrun, e.g. `torchrun --standalone --nproc_per_node 2 -m alexnet_kit train ...`")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device_id = None
    if device_kind == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise AlexKitError(f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible (fewer --nproc_per_node)")
        # Without this every rank opens a context on GPU 0 (the pin-memory thread,
        # the first allocation) and NCCL has to guess each rank's device.
        torch.cuda.set_device(local_rank)
        device_id = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        kwargs = {"device_id": device_id} if device_id is not None else {}
        dist.init_process_group(process_group_backend(device_kind), **kwargs)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def pick_device(name: str, dist: DistInfo | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist is not None and dist.world > 1:
        name = f"cuda:{dist.local_rank}"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AlexKitError(f"device {name}: CUDA is not available on this machine (use --device cpu)")
    return dev


def tower_devices(spec: str, device: torch.device, towers: int) -> list[torch.device]:
    if spec:
        devs = [torch.device(s.strip()) for s in spec.split(",")]
    elif device.type == "cuda" and torch.cuda.device_count() >= towers:
        devs = [torch.device(f"cuda:{i}") for i in range(towers)]
    else:
        devs = [device] * towers
    if len(devs) != towers:
        raise AlexKitError(f"--model-devices needs {towers} devices, one per tower, got {spec!r}")
    return devs


def place(model: AlexNet, parallel: str, device: torch.device, model_devices: str = "", dist: DistInfo | None = None,
          channels_last: bool = False) -> nn.Module:
    """The network in its running form, holding ``model``'s weights (in channels_last layout when asked)."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if parallel == "none":
        return model.to(device)
    if parallel == "model":
        if model.config.towers < 2:
            raise AlexKitError("--parallel model needs the two-tower network (model.towers = 2)")
        towers = TowerAlexNet.from_grouped(model, tower_devices(model_devices, device, model.config.towers))
        # from_grouped builds fresh (NCHW) towers: the grouped model's layout does not carry over
        return towers.to(memory_format=torch.channels_last) if channels_last else towers
    if parallel == "data":
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = model.to(device)
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    raise AlexKitError(f"--parallel must be none, model or data, not {parallel!r}")


def unwrap(net: nn.Module) -> nn.Module:
    net = getattr(net, "_orig_mod", net)  # torch.compile
    return getattr(net, "module", net)  # DDP


def input_device(net: nn.Module) -> torch.device:
    base = unwrap(net)
    if isinstance(base, TowerAlexNet):
        return base.devices[0]
    return next(base.parameters()).device


def grouped_state(net: nn.Module) -> dict[str, torch.Tensor]:
    base = unwrap(net)
    if isinstance(base, TowerAlexNet):
        return base.grouped_state_dict()
    return {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}


def load_grouped_state(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    base = unwrap(net)
    if isinstance(base, TowerAlexNet):
        base.load_grouped_state_dict(state)
    else:
        base.load_state_dict(state)


def grouped_velocity(net: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's velocities under the grouped model's parameter names (CPU)."""
    base = unwrap(net)
    vel = {}
    for name, p in base.named_parameters():
        v = optimizer.state.get(p, {}).get("velocity")
        vel[name] = (v if v is not None else torch.zeros_like(p)).detach().cpu().clone()
    if isinstance(base, TowerAlexNet):
        joined = {}
        for layer in LAYERS:
            for kind in ("weight", "bias"):
                joined[f"{layer}.{kind}"] = torch.cat([vel[f"towers.{i}.{layer}.{kind}"] for i in range(len(base.towers))])
        vel = joined
    return vel


def load_grouped_velocity(net: nn.Module, optimizer: torch.optim.Optimizer, vel: dict[str, torch.Tensor]) -> None:
    base = unwrap(net)
    if isinstance(base, TowerAlexNet):
        for layer in LAYERS:
            for i, (tower, rows) in enumerate(zip(base.towers, base._row_slices(layer))):
                for kind in ("weight", "bias"):
                    p = getattr(getattr(tower, layer), kind)
                    optimizer.state[p]["velocity"] = vel[f"{layer}.{kind}"][rows].to(p.device).clone()
        return
    for name, p in base.named_parameters():
        optimizer.state[p]["velocity"] = vel[name].to(p.device).clone()


def build_grouped(config: AlexNetConfig, seed: int) -> AlexNet:
    """The initial weights: a function of (config, seed) only, the same in every form and rank."""
    g = torch.random.fork_rng(devices=[])
    with g:
        torch.manual_seed(seed)
        return AlexNet(config)
