"""What a student takes of its teacher: which teacher layer each slot maps to, and, per teacher layer, a ranking
of the hidden dimensions, the head units and the FFN neurons (a student of width h takes the top h).

* **Layers.** Slots pair up into layers (MHA + FFN, as the search space has 2 slots per teacher layer), and the
  student's L_s layers take L_s of the teacher's L_t evenly: student layer i <- teacher layer
  ceil((i + 1) L_t / L_s) - 1, which keeps the top layer (4 of 6: 1, 2, 4, 5). A searched student of the
  space's full depth maps slot g to teacher layer g // 2. `layers` sets the mapping (repeats allowed).
* **Head units.** The student's head size s cuts the teacher's q / k / v output space into D / s contiguous
  units. When s divides the teacher's head size a unit is a slice of one teacher head; when the teacher's head
  size divides s it is s / head whole teacher heads side by side. A student MHA of width h takes h / s units.
* **Hidden dimensions and neurons.** One ranking each; every width takes its top entries, kept in the teacher's
  order (so the teacher's full width extracts the teacher itself, and narrower subspaces nest in wider ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nas_bert.arch import Arch


class ExtractionError(ValueError):
    """A student that cannot be extracted from its teacher; the message names the sizes and the setting to change."""


@dataclass(frozen=True)
class TeacherShape:
    """The sizes of a BERT-family teacher that extraction needs."""

    hidden: int
    layers: int
    heads: int
    intermediate: int

    @classmethod
    def of(cls, config) -> TeacherShape:
        return cls(int(config.hidden_size), int(config.num_hidden_layers), int(config.num_attention_heads),
                   int(getattr(config, "intermediate_size", 4 * config.hidden_size)))

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def check_unit_size(shape: TeacherShape, unit: int) -> None:
    """The student's head size must divide the teacher's, or be a multiple of it that whole heads fill."""
    t = shape.head_dim
    fits = (t % unit == 0) or (unit % t == 0 and shape.hidden % unit == 0)
    if unit < 1 or not fits:
        raise ExtractionError(
            f"student head size {unit} and the teacher's head size {t} ({shape.hidden} / {shape.heads} heads): "
            f"neither divides the other, so no student head can be formed from teacher heads; set student.head_dim "
            f"(space.head_dim) to a divisor or a multiple of {t}")


def slot_layers(slots: int) -> int:
    """How many layers `slots` slots make, two by two (MHA + FFN)."""
    return math.ceil(slots / 2)


def student_layers(arch: Arch) -> int:
    """The student's layers: its slots (identity included) two by two."""
    return slot_layers(sum(len(b.ops) for b in arch.blocks))


def layer_map(num_student: int, num_teacher: int, layers: list[int] | None = None) -> list[int]:
    """The teacher layer of each student layer: evenly spaced (the top one kept), or `layers` as given."""
    if layers is not None:
        layers = [int(v) for v in layers]
        if len(layers) != num_student or not all(0 <= v < num_teacher for v in layers):
            raise ExtractionError(
                f"student.extract.layers={layers}: give {num_student} teacher layer indices (one per student layer, "
                f"in [0, {num_teacher}); repeats allowed)")
        return layers
    if num_student > num_teacher:
        raise ExtractionError(
            f"the student has {num_student} layers (its slots two by two) and the teacher {num_teacher}: set "
            f"student.extract.layers to {num_student} teacher layer indices (repeats allowed) or use fewer layers")
    return [math.ceil((i + 1) * num_teacher / num_student) - 1 for i in range(num_student)]


def arch_widths(arch: Arch) -> list[int]:
    """The widths a student has: its embedding size and its blocks' widths."""
    return sorted({arch.embed_size, *(b.hidden for b in arch.blocks)})


def check_fits(widths: list[int], shape: TeacherShape, unit: int, ffn_ratio: int) -> None:
    """Every width, the head size and the FFNs inside the teacher's, or an error naming the sizes and the setting."""
    check_unit_size(shape, unit)
    widest = max(widths)
    if widest > shape.hidden:
        raise ExtractionError(f"the student's width {widest} is above the teacher's {shape.hidden}: extraction "
                              f"takes dimensions of the teacher; pick a narrower student (or student.init=scratch)")
    if ffn_ratio * widest > shape.intermediate:
        raise ExtractionError(
            f"an FFN of width {widest} x ratio {ffn_ratio} has {ffn_ratio * widest} neurons, the teacher's "
            f"{shape.intermediate}: lower student.ffn_ratio (space.ffn_ratio) or the width")


@dataclass(frozen=True)
class Selection:
    """Rankings, most important first: hidden (D,) dimensions; units (L_t, D / unit) head units and neurons
    (L_t, I) of every teacher layer. `how`: random or importance."""

    how: str
    unit: int
    hidden: torch.Tensor
    units: torch.Tensor
    neurons: torch.Tensor

    @staticmethod
    def top(ranking: torch.Tensor, k: int) -> torch.Tensor:
        """The first k of a ranking, in the teacher's order."""
        return ranking[:k].sort().values

    def hidden_dims(self, width: int) -> torch.Tensor:
        return self.top(self.hidden, width)

    def unit_dims(self, layer: int, width: int) -> torch.Tensor:
        """The teacher's q / k / v output dimensions of the head units a width-`width` MHA takes, unit by unit."""
        chosen = self.top(self.units[layer], width // self.unit)  # (width / unit,)
        return (chosen[:, None] * self.unit + torch.arange(self.unit)).reshape(-1)

    def neuron_ids(self, layer: int, count: int) -> torch.Tensor:
        return self.top(self.neurons[layer], count)


def random_selection(shape: TeacherShape, unit: int, seed: int) -> Selection:
    """ETD-Rand: seeded random rankings."""
    check_unit_size(shape, unit)
    g = torch.Generator().manual_seed(int(seed))
    return Selection("random", unit, torch.randperm(shape.hidden, generator=g),
                     torch.stack([torch.randperm(shape.hidden // unit, generator=g) for _ in range(shape.layers)]),
                     torch.stack([torch.randperm(shape.intermediate, generator=g) for _ in range(shape.layers)]))
