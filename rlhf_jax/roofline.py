"""The roofline of one iteration on a slice (Williams et al. 2009): each program's time is
bounded below by its FLOPs over the chip's peak and by its HBM bytes over the chip's
bandwidth, whichever is larger,

    t = max(F / peak, B / bandwidth),  bound = compute if F / B > peak / bandwidth else memory,

F and B per device. For the compiled programs both come from XLA's cost analysis, which
counts a loop's body once (a scanned layer stack, a minibatch scan, gradient accumulation):
`extrapolate` takes the costs of the program unrolled at 1 and 2 layers and scales the
per-layer difference to the model's depth, and `aot.roofline` compiles one minibatch step
and multiplies it by the steps an iteration runs. The sampler's decode loop is counted from
the bytes each step must move instead (`decode_step`): every weight the device holds and
the KV cache slots the step attends over, read once per token; at the batch sizes of RL
that read, not the FLOPs, sets the speed.

The predictions are lower bounds: a program at its roofline is at 100% of what the chip
allows; the MFU printed is the model FLOPs (`aot.compile_run`'s count from shapes) over
the predicted time, the most a run could reach.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Cost:
    """FLOPs and HBM bytes per device."""

    flops: float
    hbm_bytes: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.hbm_bytes + other.hbm_bytes)

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.flops - other.flops, self.hbm_bytes - other.hbm_bytes)

    def __mul__(self, k: float) -> Cost:
        return Cost(self.flops * k, self.hbm_bytes * k)

    def seconds(self, peak_flops: float, bandwidth: float) -> float:
        return max(self.flops / peak_flops, self.hbm_bytes / bandwidth)

    def bound(self, peak_flops: float, bandwidth: float) -> str:
        return "compute" if self.flops / peak_flops >= self.hbm_bytes / bandwidth else "memory"

    @property
    def intensity(self) -> float:
        """FLOPs per HBM byte."""
        return self.flops / self.hbm_bytes if self.hbm_bytes else float("inf")


def extrapolate(one_layer: Cost, two_layers: Cost, layers: int) -> Cost:
    """cost(L) = cost(1) + (L - 1) (cost(2) - cost(1)): every layer costs the same, the rest
    (embedding, head, loss, optimiser over the non-layer parameters) once."""
    return one_layer + (two_layers - one_layer) * (layers - 1)


def decode_step(weight_bytes: float, kv_bytes: float, params: float, rows: float) -> Cost:
    """One sampler step per device: 2 FLOPs per parameter and row, and one read of every
    weight it holds and of the KV cache slots the step attends over."""
    return Cost(2.0 * params * rows, weight_bytes + kv_bytes)


@dataclasses.dataclass(frozen=True)
class Line:
    """A program's share of an iteration: its cost per call and how often it runs."""

    name: str
    cost: Cost
    calls: float = 1.0

    def seconds(self, peak_flops: float, bandwidth: float) -> float:
        return self.calls * self.cost.seconds(peak_flops, bandwidth)


@dataclasses.dataclass(frozen=True)
class Roofline:
    lines: tuple[Line, ...]
    peak_flops: float  # per device
    bandwidth: float  # HBM bytes/s per device
    devices: int
    model_flops: float  # per iteration, all devices (counted from shapes)
    decode_tokens_per_s: float = 0.0  # per device, sampler's decode at its roofline (0: no sampler)

    @property
    def seconds(self) -> float:
        return sum(line.seconds(self.peak_flops, self.bandwidth) for line in self.lines)

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation at the predicted time: the most the iteration can reach."""
        return self.model_flops / (self.seconds * self.peak_flops * self.devices)

    @property
    def xla_flops(self) -> float:
        """Per iteration, all devices, as XLA counts them (scaled as above)."""
        return sum(line.cost.flops * line.calls for line in self.lines) * self.devices

    def record(self) -> dict:
        pf, bw = self.peak_flops, self.bandwidth
        return {
            "programs": [
                {
                    "name": line.name,
                    "tflop": line.cost.flops / 1e12,
                    "gb_moved": line.cost.hbm_bytes / 1e9,
                    "calls": line.calls,
                    "bound": line.cost.bound(pf, bw),
                    "seconds": line.seconds(pf, bw),
                }
                for line in self.lines
            ],  # fmt: skip
            "seconds": self.seconds,
            "mfu": self.mfu,
            "xla_tflop": self.xla_flops / 1e12,
            "decode_tokens_per_s_per_chip": self.decode_tokens_per_s,
        }

    def report(self) -> str:
        pf, bw = self.peak_flops, self.bandwidth
        out = [f"{'roofline':<11}{'TFLOP':>9}{'GB moved':>10}{'FLOP/B':>8}{'calls':>7}  {'bound':<8}{'time':>9}"]
        for line in self.lines:
            c = line.cost
            out.append(
                f"{line.name:<11}{c.flops / 1e12:9.3f}{c.hbm_bytes / 1e9:10.2f}{c.intensity:8.0f}{line.calls:7g}  "
                f"{c.bound(pf, bw):<8}{line.seconds(pf, bw):8.3f}s"
            )
        decode = (
            f"; decode {self.decode_tokens_per_s:,.0f} tokens/s/chip at HBM bandwidth"
            if self.decode_tokens_per_s
            else ""
        )
        out.append(
            f"iteration at the roofline: {self.seconds:,.2f} s, MFU at most {self.mfu:.0%} "
            f"({self.model_flops / 1e12:,.1f} TFLOP from shapes, {self.xla_flops / 1e12:,.1f} as counted here){decode}"
        )
        return "\n".join(out)
