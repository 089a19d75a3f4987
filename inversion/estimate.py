"""What a dataset inversion will cost, said before the run (``invert_dataset.py ... estimate=true``).

The arithmetic is exact about the work (frames, steps, ``invert`` calls, as :func:`inversion.dataset.invert_calls`
schedules them, shard k on rank ``k % world``) and measured about the time: a few steps of one batch on the chosen
device give the seconds per step and the seconds per call outside the steps (target features, the final loss),
measured at the run's largest call and at one image; a call of another size is interpolated linearly between the
two (a step has a fixed part, Adam and the loop, besides the images' passes). With early stopping the steps are an
upper bound.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .dataset import DatasetInversion, Frame, invert_calls
from .inverter import invert


@dataclass(frozen=True)
class StepTiming:
    """Seconds per Adam step and per call outside the steps, measured on a batch of ``batch`` images and on one."""

    batch: int
    per_step: float
    per_call: float
    per_step_one: float
    per_call_one: float

    def seconds(self, images: int, steps: int) -> float:
        """Device seconds of one call of ``images`` images and ``steps`` steps (linear between 1 and ``batch``)."""
        f = (images - 1) / (self.batch - 1) if self.batch > 1 else 0.0
        step = self.per_step_one + f * (self.per_step - self.per_step_one)
        call = self.per_call_one + f * (self.per_call - self.per_call_one)
        return steps * step + call


def seconds_per_step(
    run: Callable[[int], object], steps: int, clock: Callable[[], float] = time.perf_counter
) -> tuple[float, float]:
    """(seconds per step, seconds per call outside the steps) of ``run(k)``, an inversion of k steps that returns
    once the device is done: one untimed call of 1 step (allocations, compilation), then calls of 1 and ``steps``
    steps (>= 2); the per-step time is their difference over ``steps - 1``. Negative noise is clipped to 0."""
    if steps < 2:
        raise ValueError(f"estimate_steps must be at least 2, got {steps}")
    run(1)
    t0 = clock()
    run(1)
    t1 = clock()
    run(steps)
    t2 = clock()
    per_step = max(0.0, ((t2 - t1) - (t1 - t0)) / (steps - 1))
    return per_step, max(0.0, (t1 - t0) - per_step)


@dataclass(frozen=True)
class CostEstimate:
    """The whole input's work and its projected device time (seconds; ``hours`` for the totals)."""

    frames: int
    first_frames: int  # frames from the mean w / initial_w (every frame without warm start)
    warm_frames: int  # frames from their video's previous latent
    steps_first: int
    steps_warm: int
    calls_first: int
    calls_warm: int
    timing_first: StepTiming
    timing_warm: StepTiming | None
    world: int
    seconds_total: float  # device-seconds summed over every process
    seconds_per_gpu: float  # the busiest process (shards go to rank k % world)

    @property
    def hours_total(self) -> float:
        return self.seconds_total / 3600

    @property
    def hours_per_gpu(self) -> float:
        return self.seconds_per_gpu / 3600

    def report(self, early_stop: bool = False) -> str:
        """The lines ``estimate=true`` prints."""
        most = "at most " if early_stop else ""
        lines = [
            f"frames: {self.frames}"
            + (f" ({self.first_frames} first frames, {self.warm_frames} warm frames)" if self.warm_frames else ""),
            f"steps per frame: {most}{self.steps_first} first, {most}{self.steps_warm} warm"
            if self.warm_frames
            else f"steps per frame: {most}{self.steps_first}",
            f"invert calls: {self.calls_first + self.calls_warm}"
            + (f" ({self.calls_first} first, {self.calls_warm} warm)" if self.warm_frames else ""),
        ]
        names = ("first frames", "warm frames") if self.warm_frames else ("a batch", "")
        for name, t in zip(names, (self.timing_first, self.timing_warm)):
            if t is not None:
                one = f"; 1 image: {t.per_step_one:.4g} s, {t.per_call_one:.3g} s" if t.batch > 1 else ""
                lines.append(
                    f"measured ({name}), batch of {t.batch}: {t.per_step:.4g} s per step, "
                    f"{t.per_call:.3g} s per call besides the steps{one}"
                )
        lines.append(
            f"projected: {self.hours_total:.4g} device-hours in all ({self.seconds_total:.4g} s); "
            f"{self.hours_per_gpu:.4g} hours per GPU with {self.world} process(es) (torchrun's world size)"
        )
        return "\n".join(lines)


def estimate_cost(
    lengths: list[int],
    batch_size: int,
    sequential: bool,
    steps: int,
    warm_steps: int,
    timing_first: StepTiming,
    timing_warm: StepTiming | None,
    world: int = 1,
) -> CostEstimate:
    """The cost of inverting shards of these ``lengths`` (in shard order) on ``world`` processes."""
    per_rank = []
    for rank in range(world):
        calls = invert_calls(lengths[rank::world], batch_size, sequential)
        seconds = sum(timing_first.seconds(n, steps) for n in calls.first)
        seconds += sum((timing_warm or timing_first).seconds(n, warm_steps) for n in calls.warm)
        per_rank.append(seconds)
    calls = invert_calls(lengths, batch_size, sequential)
    return CostEstimate(
        frames=sum(lengths),
        first_frames=sum(calls.first),
        warm_frames=sum(calls.warm),
        steps_first=steps,
        steps_warm=warm_steps,
        calls_first=len(calls.first),
        calls_warm=len(calls.warm),
        timing_first=timing_first,
        timing_warm=timing_warm,
        world=world,
        seconds_total=sum(per_rank),
        seconds_per_gpu=max(per_rank, default=0.0),
    )


def time_batch(
    runner: DatasetInversion, images: torch.Tensor, steps: int, w_init: torch.Tensor | None = None
) -> tuple[StepTiming, torch.Tensor]:
    """:func:`seconds_per_step` of ``runner``'s inversion of ``images`` and of its first image alone (no early
    stopping: every step runs); also returns the latents reached (a warm batch's start)."""
    reached: list[torch.Tensor] = []

    def timed(rows: int) -> tuple[float, float]:
        def run(k: int) -> None:
            options = dataclasses.replace(runner.options, steps=k, early_stop_patience=0)
            start = None if w_init is None else w_init[:rows]
            reached[:] = [invert(runner.G, images[:rows], runner.loss_fn, options, w_init=start).w_plus]  # waits

        return seconds_per_step(run, steps)

    one = timed(1)
    batch = timed(len(images)) if len(images) > 1 else one
    return StepTiming(len(images), *batch, *one), reached[0]


def estimate_run(runner: DatasetInversion, shards: list[list[Frame]], steps: int, world: int = 1) -> CostEstimate:
    """Measure ``steps`` steps of a batch (of the largest call the run makes) on ``runner``'s device, from the mean
    w / ``initial_w`` and (warm start) from the latents that reached, and project the cost of all ``shards``."""
    sequential = runner.warm_start == "sequential"
    lengths = [len(shard) for shard in shards]
    calls = invert_calls(lengths, runner.batch_size, sequential)
    if not calls.first:
        raise ValueError("no frames to invert in the input")
    batch = max(calls.first + calls.warm)
    frames = [frame for shard in shards for frame in shard]
    _, targets, _ = runner._targets(frames[: batch + 16])
    if not len(targets):
        raise ValueError(f"none of the first {min(len(frames), batch + 16)} frames could be read")
    images = targets.repeat(-(-batch // len(targets)), 1, 1, 1)[:batch]
    timing_first, reached = time_batch(runner, images, steps, runner.initial_w(images))
    timing_warm = time_batch(runner, images, steps, reached)[0] if calls.warm else None
    return estimate_cost(
        lengths,
        runner.batch_size,
        sequential,
        runner.options.steps,
        runner.warm_steps,
        timing_first,
        timing_warm,
        world,
    )
