"""The search-space data model: a Space is ordered layers, each an ordered list of options.

Its own module, below both the loader (``layernas.core.space``) and the cost model
(``layernas.core.cost``): loading a space orders its options by their cost, and the cost
model reads spaces, so with model and loading in one file the two imported each other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

BACKBONES = ("additive", "mobilenet", "nb201", "nats")
ACTIVATIONS = ("relu", "relu6", "hswish", "swish")
NB201_OPS = ("nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3", "skip_connect", "none")


class SpaceError(ValueError):
    """A space definition is malformed; the message names the field (and line when known)."""


@dataclass(frozen=True)
class Layer:
    """One searched decision. ``options`` are dicts of fields (e.g. kernel, expanded)."""

    name: str
    options: tuple[dict[str, Any], ...]
    labels: tuple[str, ...]
    default: int = 0  # the default option o_i: what the layer is while earlier layers are searched

    def __len__(self) -> int:
        return len(self.options)


@dataclass(frozen=True)
class Space:
    name: str
    version: int
    backbone: str
    layers: tuple[Layer, ...]
    network: dict[str, Any] = field(default_factory=dict)
    input_size: int = 224
    input_channels: int = 3
    num_classes: int = 1000
    description: str = ""
    source: str = ""

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(layer) for layer in self.layers)

    @cached_property
    def space_id(self) -> str:
        """Name + version + content hash: part of every trial key, so editing a space
        file can never silently reuse trials trained on the old definition."""
        content = {
            "backbone": self.backbone,
            "layers": [[layer.name, list(layer.options)] for layer in self.layers],
            "network": self.network,
        }
        if any(self.default_arch()):  # spaces with option-0 defaults keep the ids they always had
            content["defaults"] = list(self.default_arch())
        blob = json.dumps(content, sort_keys=True, default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
        return f"{self.name}@v{self.version}-{digest}"

    def default_arch(self) -> tuple[int, ...]:
        """Every layer at its default option (option 0 unless the space file says otherwise)."""
        return tuple(layer.default for layer in self.layers)

    def option(self, layer: int, index: int) -> dict[str, Any]:
        return self.layers[layer].options[index]

    def check_arch(self, arch: tuple[int, ...]) -> tuple[int, ...]:
        arch = tuple(int(x) for x in arch)
        if len(arch) != self.num_layers:
            raise ValueError(
                f"arch {format_arch(arch)} has {len(arch)} layers; space {self.name} has {self.num_layers}"
            )
        for i, (x, n) in enumerate(zip(arch, self.sizes)):
            if not 0 <= x < n:
                raise ValueError(
                    f"arch {format_arch(arch)}: option {x} of layer {i} ({self.layers[i].name}) "
                    f"is out of range 0..{n - 1}"
                )
        return arch

    def describe(self, arch: tuple[int, ...]) -> list[str]:
        return [layer.labels[x] for layer, x in zip(self.layers, arch)]


def format_arch(arch: tuple[int, ...] | list[int]) -> str:
    return "-".join(str(int(x)) for x in arch)


def parse_arch(text: str, space: Space | None = None) -> tuple[int, ...]:
    """Parse ``3-0-12``; with a space, also ``default`` and range checks (``min`` and ``max``,
    which need the cost model, are `layernas.core.space.parse_arch`'s)."""
    text = str(text).strip()
    if space is not None and text == "default":
        return space.default_arch()
    try:
        arch = tuple(int(x) for x in text.split("-"))
    except ValueError:
        raise ValueError(f"arch {text!r} is not dash-joined option indices like 0-3-1") from None
    return space.check_arch(arch) if space is not None else arch
