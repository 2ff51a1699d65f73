"""SSDLite on a found backbone: the detector of a transfer run, and the matched reference.

Its own module because building the network is independent of training and scoring it
(`layernas.detect.train_eval`) and of the run that writes results (`layernas.detect.transfer`):
tests and studies build, count and compare detectors here without data.

- `found_features` rebuilds the found classifier with `models.build_model`, loads its weights
  and keeps its feature layers (stem, bneck blocks, head conv); `TapBackbone` returns the maps
  at the configured strides, adding torchvision's SSDLite extra blocks (`_extra_block`) past the
  network's own deepest stride. A mobilenet-tiny model (28 px Fashion-MNIST) only reaches
  stride 4, so with the default strides (8, 16, 32) all three detection maps come from extras
  over its full feature stack; a MobileNetV3 taps its own stride-8/16/32 layers.
- Input channels: the found model saw 1-channel images; the detector sees RGB (COCO, and the
  generated set is loaded as gray replicated to RGB). The stem conv becomes a 3-channel conv
  whose weights are the 1-channel weights divided by 3 on every channel: on a gray image that is
  exactly the trained filter, and on a colour image it filters the channel mean (luminance).
- The detector is torchvision's `SSD` with `SSDLiteHead` and `DefaultBoxGenerator`, at the real
  canvas size (not 320 px, which is ~12x slower here); nothing of SSD is re-implemented.
- The reference is `torchvision.models.mobilenet_v3_small(weights=None, width_mult=w).features`
  with w chosen so its backbone MAdds at the canvas size are closest to the found backbone's.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from layernas.detect.recipe import TransferConfig

# --------------------------------------------------------------------------- backbones

_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)  # torchvision's SSDLite norm layer


class TapBackbone(nn.Module):
    """``body`` (the classifier's feature layers, cut after the deepest tap) returns the outputs
    of modules ``taps``; ``extras`` continue from the body's output, each halving the size, and
    the ones in ``extra_out`` are returned too. SSD reads ``out_channels`` and the OrderedDict."""

    def __init__(self, body: nn.Sequential, taps: list[int], extras: nn.ModuleList, extra_out: list[int],
                 out_channels: list[int]):
        super().__init__()
        self.body = body
        self.taps = list(taps)
        self.extras = extras
        self.extra_out = list(extra_out)
        self.out_channels = list(out_channels)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps: list[torch.Tensor] = []
        for i, module in enumerate(self.body):
            x = module(x)
            if i in self.taps:
                maps.append(x)
        for j, extra in enumerate(self.extras):
            x = extra(x)
            if j in self.extra_out:
                maps.append(x)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def _module_shapes(features: nn.Sequential, canvas: int, in_channels: int = 3) -> list[tuple[int, int]]:
    """(channels, stride) after every module of ``features`` on a canvas-size input."""
    shapes = []
    was = features.training
    features.eval()
    with torch.no_grad():
        x = torch.zeros(1, in_channels, canvas, canvas)
        for m in features:
            x = m(x)
            shapes.append((int(x.shape[1]), int(round(canvas / x.shape[-1]))))
    features.train(was)
    return shapes


def tap_backbone(features: nn.Sequential, canvas: int, strides: tuple[int, ...], extra_channels: int,
                 norm_layer: Callable[..., nn.Module] = _NORM) -> TapBackbone:
    """Cut ``features`` into a detection backbone returning one map per requested stride.

    Each stride the network reaches is tapped at the last module with that stride; the body ends
    at the last module whose stride is <= the largest requested one; every larger stride comes
    from a chain of SSDLite extra blocks (stride 2 each) over the body's output.
    """
    from torchvision.models.detection.ssdlite import _extra_block, _normal_init

    shapes = _module_shapes(features, canvas)
    top = max(strides)
    end = max((i for i, (_, s) in enumerate(shapes) if s <= top), default=None)
    if end is None:
        raise ValueError(f"the backbone's first layer already has stride {shapes[0][1]} > {top}")
    taps, out_channels = [], []
    for s in strides:
        idx = [i for i in range(end + 1) if shapes[i][1] == s]
        if idx:
            taps.append(idx[-1])
            out_channels.append(shapes[idx[-1]][0])
    last_c, last_s = shapes[end]
    rest = [s for s in strides if s > last_s]
    missing = [s for s in strides if s <= last_s and not any(shapes[i][1] == s for i in range(end + 1))]
    if missing:
        raise ValueError(f"no layer of the backbone has stride {missing} at canvas {canvas} "
                         f"(strides: {sorted({s for _, s in shapes})})")
    if rest and canvas // max(rest) < 1:
        raise ValueError(f"stride {max(rest)} leaves no pixels on a {canvas} px canvas")
    extras, extra_out = nn.ModuleList(), []
    c, s = last_c, last_s
    while rest and s < max(rest):
        extras.append(_extra_block(c, extra_channels, norm_layer))
        c, s = extra_channels, s * 2
        if s in rest:
            extra_out.append(len(extras) - 1)
            out_channels.append(c)
    _normal_init(extras)
    return TapBackbone(nn.Sequential(*features[: end + 1]), taps, extras, extra_out, out_channels)


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} does not exist")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # tolerate a checkpoint dict wrapping the state_dict
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} does not hold a state_dict (got {type(sd).__name__})")
    return sd


def _feature_stack(model: nn.Module) -> nn.Sequential:
    """The convolutional part of a built classifier, as one Sequential."""
    if isinstance(getattr(model, "features", None), nn.Sequential):
        return model.features
    if hasattr(model, "stem") and hasattr(model, "cells"):  # nb201 / nats CellNetwork
        return nn.Sequential(model.stem, *model.cells, model.lastact)
    raise ValueError(f"cannot find feature layers in a {type(model).__name__}")


def _rgb_stem(features: nn.Sequential) -> str:
    """Make the first conv take 3 channels: weights / 3 on each channel (see the module docs)."""
    for parent in features.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels == 3:
                    return "stem already 3-channel"
                if child.in_channels != 1 or child.groups != 1:
                    raise ValueError(f"cannot map a {child.in_channels}-channel stem to RGB")
                conv = nn.Conv2d(3, child.out_channels, child.kernel_size, child.stride, child.padding,
                                 child.dilation, bias=child.bias is not None)
                with torch.no_grad():
                    conv.weight.copy_(child.weight.repeat(1, 3, 1, 1) / 3.0)
                    if child.bias is not None:
                        conv.bias.copy_(child.bias)
                setattr(parent, name, conv)
                return "1-channel stem weights / 3 on each RGB channel (exact on gray images)"
    raise ValueError("the backbone has no conv layer")


def found_features(space, arch, weights: str | Path | None) -> tuple[nn.Sequential, dict[str, Any]]:
    """The found model's feature layers with its trained weights (when given), RGB input."""
    from layernas.core.space import format_arch
    from layernas.evaluate.models import build_model

    model = build_model(space, arch)
    info: dict[str, Any] = {"weights": str(weights) if weights else None, "pretrained": False}
    if weights:
        sd = _read_state_dict(weights)
        # Only the feature layers transfer; the classifier may have had another class count.
        prefixes = ("features.", "stem.", "cells.", "lastact.")
        wanted = [k for k in model.state_dict() if k.startswith(prefixes)]
        missing = [k for k in wanted if k not in sd]
        if missing:
            raise ValueError(f"weights {weights} do not fit arch {format_arch(arch)} of {space.name}: "
                             f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        try:
            model.load_state_dict({k: sd[k] for k in wanted}, strict=False)
        except RuntimeError as exc:
            raise ValueError(f"weights {weights} do not fit arch {format_arch(arch)} of {space.name}: "
                             f"{str(exc).strip().splitlines()[-1].strip()}") from None
        info["pretrained"] = True
    else:
        info["note"] = "no weights given: the found architecture is trained from scratch"
    features = _feature_stack(model)
    info["stem"] = _rgb_stem(features)
    return features, info


def reference_features(width_mult: float) -> nn.Sequential:
    from torchvision.models import mobilenet_v3_small

    return mobilenet_v3_small(weights=None, width_mult=float(width_mult)).features


def backbone_madds(backbone: TapBackbone, canvas: int) -> int:
    """MAdds of the transferred classifier layers (``body``) on one canvas: the matched cost."""
    from layernas.evaluate.counting import count_madds_params

    return count_madds_params(backbone.body, canvas, 3)["madds"]


def match_reference_width(target_madds: float, cfg: TransferConfig) -> tuple[float, int]:
    """Width multiplier (a multiple of 0.05) of MobileNetV3-Small whose body MAdds at the canvas
    are closest to ``target_madds``; bisection, as MAdds grow with the width."""
    cache: dict[float, int] = {}

    def madds(w: float) -> int:
        w = round(w, 2)
        if w not in cache:
            tb = tap_backbone(reference_features(w), cfg.canvas, cfg.strides, cfg.extra_channels)
            cache[w] = backbone_madds(tb, cfg.canvas)
        return cache[w]

    lo, hi = 1, 80  # in steps of 0.05: widths 0.05 .. 4.0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if madds(mid * 0.05) < target_madds:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda k: abs(madds(k * 0.05) - target_madds))
    return round(best * 0.05, 2), madds(best * 0.05)


# --------------------------------------------------------------------------- detector


def build_detector(backbone: TapBackbone, num_classes: int, cfg: TransferConfig) -> nn.Module:
    """torchvision SSD + SSDLiteHead on ``backbone``; ``num_classes`` includes background."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead

    size = (cfg.canvas, cfg.canvas)
    n_maps = len(backbone.out_channels)
    anchors = DefaultBoxGenerator([list(cfg.aspect_ratios)] * n_maps, min_ratio=cfg.min_ratio,
                                  max_ratio=cfg.max_ratio)
    out_channels = det_utils.retrieve_out_channels(backbone, size)
    head = SSDLiteHead(out_channels, anchors.num_anchors_per_location(), num_classes, _NORM)
    return SSD(backbone, anchors, size, num_classes, head=head, image_mean=list(cfg.image_mean),
               image_std=list(cfg.image_std), score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
               detections_per_img=cfg.detections_per_img, topk_candidates=300)


class _DetectorFeatures(nn.Module):
    """Backbone + head in one forward, so the hook counter can count the whole detector."""

    def __init__(self, det: nn.Module):
        super().__init__()
        self.det = det

    def forward(self, x: torch.Tensor):
        return self.det.head(list(self.det.backbone(x).values()))


def detector_madds(det: nn.Module, canvas: int) -> dict[str, int]:
    from layernas.evaluate.counting import count_madds_params

    return count_madds_params(_DetectorFeatures(det), canvas, 3)
