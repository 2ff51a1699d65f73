"""Search spaces: ordered layers, each an ordered list of options with one default.

A space is read from YAML (`layernas/core/spaces/<name>.yaml` or a user path) and validated up
front, so a malformed file fails with the field and line of the problem instead of a
KeyError deep inside a search. Each layer's default o_i (what the layer is while earlier
layers are searched) is option 0 unless the layer says ``default:`` (an option label or
index): the paper's size search starts from the dearest option, its topology search from the
no-op. Generated option sets are sorted most expensive first (that fixes the arch strings);
explicit lists keep their order. The engine's bounds are exact for any order and default
(`layernas.core.bounds`); the loader checks the cost model is usable for every option.

Backbones (how options become a network and a cost):
- ``additive``: every option carries an explicit ``cost`` (and optional ``params``); the
  cost of an arch is the sum. Used by the Appendix I toy space and by property tests.
- ``mobilenet``: stem conv, inverted-residual (bneck) blocks, head; options set block
  output filters (virtual "block filter" layers), kernel x expanded filters, head widths.
- ``nb201``: the NAS-Bench-201 cell; layer i picks the ops of every edge into node i.
- ``nats``: the NATS-Bench size space; layer i picks the channel count of one stage.
"""

from __future__ import annotations

import itertools
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

# The data model lives in layernas.core.arch (below the cost model); the loader gives it its
# public face here, so callers import spaces and archs from one place.
from layernas.core.arch import (  # noqa: F401
    ACTIVATIONS,
    BACKBONES,
    NB201_OPS,
    Layer,
    Space,
    SpaceError,
    format_arch,
)
from layernas.core.arch import parse_arch as _parse_arch
from layernas.core.bounds import check_consistent, extreme_arch, order_options


def parse_arch(text: str, space: Space | None = None) -> tuple[int, ...]:
    """Parse ``3-0-12``; with a space, also ``default``, ``min`` / ``max`` (the cheapest and
    the dearest arch by MAdds) and range checks."""
    word = str(text).strip()
    if space is not None and word in ("min", "max"):
        return extreme_arch(space, word)
    return _parse_arch(text, space)

# --------------------------------------------------------------------------- loading


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping, for error messages."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_lines(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_lines(v) for k, v in obj.items() if k != "__line__"}
    if isinstance(obj, list):
        return [_strip_lines(v) for v in obj]
    return obj


def builtin_dir() -> Path:
    return Path(str(resources.files("layernas.core") / "spaces"))


def list_spaces() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.yaml"))


def load_space(name_or_path: str | Path) -> Space:
    """Load a built-in space by name or a user YAML file by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") or not path.exists():
        candidate = builtin_dir() / f"{name_or_path}.yaml"
        if candidate.exists():
            path = candidate
        elif path.suffix in (".yaml", ".yml"):
            raise SpaceError(f"space file {path} does not exist")
        else:
            raise SpaceError(
                f"unknown space {str(name_or_path)!r}; built-in spaces: {', '.join(list_spaces())} "
                "(or pass a path to a .yaml space file)"
            )
    try:
        raw = yaml.load(path.read_text(), Loader=_LineLoader)
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML{_yaml_problem(exc)}") from None
    return space_from_dict(raw, source=str(path))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error as one line: where it stopped, what it expected, and where the construct
    it was reading began (an unclosed bracket is reported where the parser gives up)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f": {' '.join(str(exc).split())}"
    out = f" at line {mark.line + 1}, column {mark.column + 1}: {getattr(exc, 'problem', None) or 'parse error'}"
    ctx, ctx_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if ctx:
        where = f" that starts at line {ctx_mark.line + 1}, column {ctx_mark.column + 1}" if ctx_mark else ""
        out += f" ({ctx}{where})"
    return out


def _err(where: str, line: Any, msg: str) -> SpaceError:
    at = f" (line {line})" if line else ""
    return SpaceError(f"{where}{at}: {msg}")


def _int_list(raw: dict, key: str, where: str) -> list[int]:
    values = raw.get(key)
    line = raw.get("__line__")
    if not isinstance(values, list) or not values:
        raise _err(f"{where}.{key}", line, f"must be a non-empty list of positive integers, got {values!r}")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise _err(f"{where}.{key}", line, f"must contain positive integers, got {v!r}")
    if len(set(values)) != len(values):
        raise _err(f"{where}.{key}", line, f"has duplicate values {values}")
    return values


def _label(opt: dict[str, Any]) -> str:
    if "label" in opt:
        return str(opt["label"])
    if set(opt) == {"ops"}:  # an NB201 node: the op of each incoming edge, e.g. nor_conv_3x3|none
        return "|".join(NB201_OPS[i] for i in opt["ops"])
    short = {"kernel": "k", "expanded": "e", "filters": "f", "out": "o", "channels": "c"}
    return "".join(f"{short.get(k, k)}{v}" for k, v in opt.items() if k != "cost" and k != "params")


def _parse_layer(raw: Any, index: int, backbone: str) -> Layer:
    where = f"layers[{index}]"
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: must be a mapping with a name and options, got {raw!r}")
    line = raw.get("__line__")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _err(f"{where}.name", line, "is missing or not a string")
    where = f"layers[{index}] ({name})"
    options: list[dict[str, Any]]
    if "options" in raw:
        opts = raw["options"]
        if not isinstance(opts, list) or not opts:
            raise _err(f"{where}.options", line, f"must be a non-empty list, got {opts!r}")
        options = []
        for j, opt in enumerate(opts):
            if not isinstance(opt, dict):
                raise _err(f"{where}.options[{j}]", line, f"must be a mapping, got {opt!r}")
            options.append(_strip_lines(opt))
        if backbone == "additive":
            for j, opt in enumerate(options):
                c = opt.get("cost")
                if not isinstance(c, (int, float)) or isinstance(c, bool) or c < 0:
                    raise _err(f"{where}.options[{j}].cost", line, f"must be a number >= 0, got {c!r}")
    elif "filters" in raw:
        options = [{"filters": v} for v in _int_list(raw, "filters", where)]
    elif "channels" in raw:
        options = [{"channels": v} for v in _int_list(raw, "channels", where)]
    elif "out" in raw and "expanded" in raw:
        # Paired rows (the tables' last bneck): out[i] goes with expanded[i]; kernels optional.
        outs = _int_list(raw, "out", where)
        exps = _int_list(raw, "expanded", where)
        if len(outs) != len(exps):
            raise _err(where, line, f"out ({len(outs)} values) and expanded ({len(exps)}) must pair up")
        kernels = _int_list(raw, "kernels", where) if "kernels" in raw else [None]
        options = [
            ({"kernel": k} if k is not None else {}) | {"out": o, "expanded": e}
            for k, (o, e) in itertools.product(kernels, zip(outs, exps))
        ]
    elif "kernels" in raw and "expanded" in raw:
        kernels = _int_list(raw, "kernels", where)
        for k in kernels:
            if k % 2 == 0:
                raise _err(f"{where}.kernels", line, f"kernel sizes must be odd, got {k}")
        expanded = _int_list(raw, "expanded", where)
        options = [{"kernel": k, "expanded": e} for k, e in itertools.product(kernels, expanded)]
    elif "edges" in raw:
        edges = raw["edges"]
        if not isinstance(edges, int) or not 1 <= edges <= 3:
            raise _err(f"{where}.edges", line, f"must be 1, 2 or 3, got {edges!r}")
        options = [{"ops": list(ops)} for ops in itertools.product(range(len(NB201_OPS)), repeat=edges)]
    else:
        raise _err(
            where,
            line,
            "needs one of: options (list), filters (list), channels (list), kernels+expanded (lists), "
            "out+expanded (paired lists), edges (int)",
        )
    return Layer(name=name, options=tuple(options), labels=tuple(_label(o) for o in options))


def space_from_dict(raw: Any, source: str = "<dict>") -> Space:
    if not isinstance(raw, dict):
        raise SpaceError(f"{source}: a space file must be a mapping with name, backbone and layers")
    line = raw.get("__line__")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _err(f"{source}: name", line, "is missing or not a string")
    backbone = raw.get("backbone")
    if backbone not in BACKBONES:
        raise _err(f"{source}: backbone", line, f"must be one of {', '.join(BACKBONES)}, got {backbone!r}")
    version = raw.get("version", 1)
    if not isinstance(version, int):
        raise _err(f"{source}: version", line, f"must be an integer, got {version!r}")
    layers_raw = raw.get("layers")
    if not isinstance(layers_raw, list) or not layers_raw:
        raise _err(f"{source}: layers", line, "must be a non-empty list")
    try:
        layers = tuple(_parse_layer(lr, i, backbone) for i, lr in enumerate(layers_raw))
    except SpaceError as exc:
        raise SpaceError(f"{source}: {exc}") from None
    names = [layer.name for layer in layers]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise _err(f"{source}: layers", line, f"layer names must be unique, repeated: {sorted(dup)}")
    ints = {}
    for key, default in (("input_size", 224), ("input_channels", 3), ("num_classes", 1000)):
        v = raw.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise _err(f"{source}: {key}", line, f"must be a positive integer, got {v!r}")
        ints[key] = v
    space = Space(
        name=name,
        version=version,
        backbone=backbone,
        layers=layers,
        network=_strip_lines(raw.get("network") or {}),
        description=str(raw.get("description", "")).strip(),
        source=source,
        **ints,
    )
    try:
        space = order_options(space, raw_layers=layers_raw)
        space = _with_defaults(space, layers_raw)
        check_consistent(space)
    except SpaceError as exc:
        raise SpaceError(f"{source}: {exc}") from None
    return space


def _with_defaults(space: Space, raw_layers: list) -> Space:
    """Resolve each layer's ``default:`` (a label, or an index into the final option order)."""
    from dataclasses import replace

    layers = list(space.layers)
    for j, (layer, raw) in enumerate(zip(layers, raw_layers)):
        if "default" not in raw:
            continue
        value, line = raw["default"], raw.get("__line__")
        where = f"layers[{j}] ({layer.name}).default"
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < len(layer):
                raise _err(where, line, f"option index {value} is out of range 0..{len(layer) - 1}")
            index = value
        elif isinstance(value, str) and value in layer.labels:
            index = layer.labels.index(value)
        else:
            shown = ", ".join(layer.labels[:6]) + (", ..." if len(layer) > 6 else "")
            raise _err(where, line, f"{value!r} is neither an option label nor an index; labels: {shown}")
        layers[j] = replace(layer, default=index)
    return replace(space, layers=tuple(layers))
