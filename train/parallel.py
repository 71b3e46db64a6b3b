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

What the ranks agree on (:class:`StopVote`, :func:`sum_over_ranks`): when to
stop, the epoch's training totals and the validation sums. One process (no
process group) agrees with itself and runs no collective.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from alexnet_kit.errors import AlexKitError
from alexnet_kit.model import AlexNet, AlexNetConfig
from alexnet_kit.towers import TowerAlexNet

if TYPE_CHECKING:
    from .monitor import Meter

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    #: a process group (--parallel data): the ranks reduce and vote, however many there are (a
    #: one-GPU torchrun, the GPU check's ddp stage, runs the same NCCL reductions as eight)
    collective: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def process_group_backend(device_kind: str) -> str:
    """NCCL for the CUDA tensors, gloo for any CPU tensor (a stray CPU collective works instead of failing)."""
    return "cpu:gloo,cuda:nccl" if device_kind == "cuda" else "gloo"


def init_distributed(device_kind: str) -> DistInfo:
    """Join the torchrun job, each rank bound to its own GPU before NCCL starts."""
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
    if not tdist.is_initialized():
        kwargs = {"device_id": device_id} if device_id is not None else {}
        tdist.init_process_group(process_group_backend(device_kind), **kwargs)
    return DistInfo(tdist.get_rank(), tdist.get_world_size(), local_rank, collective=True)


def end_distributed(dist: DistInfo) -> None:
    """Leave the process group this process joined (nothing without one)."""
    if not dist.collective or not tdist.is_initialized():
        return
    # gloo's worker threads take the GIL to free a collective's tensors once it has ended,
    # and the process group's destructor (here, or when the DDP model goes) holds the GIL
    # while it joins them: a rank that stopped right after a collective could hang at exit
    # (one stop in six did). Sleeping gives them the GIL; no collective follows.
    time.sleep(0.1)
    tdist.destroy_process_group()


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
        model = model.to(device)
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
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


class HostCopy:
    """A device tensor's values copied to the host without waiting; :meth:`get` waits only if
    the copy is still running (read a window later, it is long done). CPU tensors: themselves."""

    def __init__(self, t: torch.Tensor):
        if t.device.type == "cuda":
            # the copy is queued on t's device's stream, so the event must be recorded there
            # too (a tower on cuda:1 while cuda:0 is current would otherwise be read too early)
            with torch.cuda.device(t.device):
                self.host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                self.host.copy_(t, non_blocking=True)
                self.done = torch.cuda.Event()
                self.done.record()
        else:
            self.host, self.done = t, None

    def get(self) -> torch.Tensor:
        if self.done is not None:
            self.done.synchronize()
        return self.host


def _float64(values: list, device: torch.device) -> torch.Tensor:
    """Device tensors and host numbers as one float64 vector on ``device`` (which the tensors are
    on); float64 holds the counts exactly. Host numbers are joined by fill kernels, not blocking copies."""
    return torch.stack([v.double() if isinstance(v, torch.Tensor) else torch.full((), float(v), dtype=torch.float64, device=device)
                        for v in values])


def sum_over_ranks(dist: DistInfo, device: torch.device, values: list) -> list[float]:
    """``values`` (device tensors on one device, host numbers) summed over every rank, as host floats.

    ``device``: the process group's (an NCCL group has no CPU backend)."""
    if not dist.collective:
        return [float(v) for v in values]
    home = next((v.device for v in values if isinstance(v, torch.Tensor)), device)
    t = _float64(values, home).to(device)
    tdist.all_reduce(t)
    return t.tolist()


class StopVote:
    """The signal every rank stops for (0: go on). One process stops for its own signal.

    Under DDP a rank that stopped alone would leave the others blocked in the next all-reduce,
    so the ranks vote every ``every`` steps (every rank at the same steps) and at every epoch
    end: the MAX of their signal numbers, 0 where none came. A window's vote is read at the
    next (its copy to the host long done: no stall), and every rank reads the same vote at the
    same step, so all stop at the same step, for the same signal.
    """

    def __init__(self, dist: DistInfo, device: torch.device, every: int):
        self.dist, self.device, self.every = dist, device, every
        self._inflight: HostCopy | None = None  # the last vote, on its way to the host

    def at_step(self, step: int, requested: int, clock: tuple[float, ...] = ()) -> tuple[int, tuple[float, ...] | None]:
        """After ``step``: the agreed signal and the agreed ``clock`` values (None: no vote at this
        step). ``requested``: this process's signal (0: none); ``clock``: numbers every rank must
        agree on (the budget's progress), the largest over the ranks."""
        if not self.dist.collective:
            return requested, clock
        if step % self.every:
            return 0, None
        if self._inflight is not None:
            got = self._inflight.get().tolist()
            agreed, agreed_clock = int(got[0]), tuple(got[1:])
        else:
            agreed, agreed_clock = 0, None
        # on the device (NCCL has no CPU), made by a fill kernel: torch.tensor(list, device=cuda)
        # would be a blocking copy from pageable host memory every `every` steps
        t = _float64([requested, *clock], self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX, async_op=True).wait()  # NCCL: the stream waits, not the host
        self._inflight = HostCopy(t)
        return agreed, agreed_clock

    def at_epoch_end(self, meter: "Meter", requested: int, clock: tuple[float, ...] = ()) -> tuple[dict, int, tuple[float, ...]]:
        """The epoch's training totals over every rank (as :meth:`Meter.to_dict`), the agreed
        signal and the agreed ``clock`` values (as :meth:`at_step`), in one reduction that every
        rank runs at every epoch end."""
        self._inflight = None  # this reduction carries every rank's signal: a vote still in flight is stale
        if not self.dist.collective:
            return meter.to_dict(), requested, clock
        errors = meter.errors
        t = _float64([meter.loss_sum, errors.wrong1, errors.wrongk, errors.n, meter.seconds, requested, *clock],
                     meter.loss_sum.device).to(self.device)  # the process group's device (the same one under DDP)
        tdist.all_reduce(t[:5])
        tdist.all_reduce(t[5:], op=tdist.ReduceOp.MAX)
        loss_sum, w1, w5, n, seconds, stop, *agreed_clock = t.tolist()
        # every rank counts the global batch already
        totals = {"loss_sum": loss_sum, "n": n, "wrong1": w1, "wrong5": w5, "seconds": seconds, "images": float(meter.images)}
        return totals, int(stop), tuple(agreed_clock)
