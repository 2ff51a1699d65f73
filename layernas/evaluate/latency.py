"""Measure latency tables: every distinct segment of a space (stem, block, head conv, pooled
tail) timed once in its context, batch 1, fixed threads, warm-up, then the minimum (default) or
the median of repeats: under other load on the machine the minimum moved 0.4% between two
tables of mobilenet-tiny, the median 1.3% (docs/latency.md).

Why per segment and not per model: a search needs the latency of archs it never builds; the
segments a space can produce are few (thousands for the paper's 60M space, ~250 for
mobilenet-tiny) and sum like MAdds (`layernas.core.latency`). The fixed term is what whole
models take beyond their segments (Python dispatch between modules, the first allocation),
measured on a few calibration archs and taken as the median difference.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from layernas.core import latency as lat
from layernas.core.cost import Context, Resolver, cost_pieces
from layernas.core.space import Space, parse_arch
from layernas.evaluate.models import BlockConfig, InvertedResidual, activation_layer, build_model


def segment_keys(space: Space, ctx: Context) -> list[str]:
    """Every segment key any arch of the space can produce (per piece, over the options of
    the layers it reads; nothing enumerated beyond that)."""
    default = np.asarray(space.default_arch(), dtype=np.int64)[None, :]
    index = {layer.name: j for j, layer in enumerate(space.layers)}
    found: dict[str, None] = {}
    for piece in cost_pieces(space, ctx):
        probe = Resolver(space, default)
        piece(probe)
        layers = sorted(index[n] for n in probe.used)
        shape = tuple(space.sizes[j] for j in layers)
        rows = np.repeat(default, int(np.prod(shape)) if shape else 1, axis=0)
        for j, col in zip(layers, np.indices(shape).reshape(len(layers), -1) if layers else []):
            rows[:, j] = col
        _m, _p, *seg = piece(Resolver(space, rows, segments=True))
        if not seg or seg[0] is None:
            raise lat.LatencyError(f"space {space.name}: latency tables support the mobilenet backbone only")
        found.update(dict.fromkeys(seg[0]))
    return list(found)


def segment_module(key: str, input_channels: int) -> tuple[nn.Module, tuple[int, ...]]:
    """The module a key names and its input shape (batch 1)."""
    kind, f = lat.parse_segment_key(key)
    act = activation_layer(str(f["act"])) if f.get("act") else None
    if kind == "conv":
        h_in = f["h"] * f["s"]  # 'same' padding: the output is ceil(h_in / s); the input size only needs to map to h
        m = Conv2dNormActivation(f["c"], f["o"], f["k"], stride=f["s"], activation_layer=act)
        return m, (1, f["c"], h_in, h_in)
    if kind == "block":
        cfg = BlockConfig(in_channels=f["c"], kernel=f["k"], expanded=f["e"], out_channels=f["o"], stride=f["s"],
                          se=bool(f["se"]), act=str(f["act"]))
        return InvertedResidual(cfg), (1, f["c"], f["h"], f["h"])
    if kind == "tail":
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        c = f["c"]
        if f["hidden"]:
            layers += [nn.Linear(c, f["hidden"]), act(inplace=True)]
            c = f["hidden"]
        layers += [nn.Linear(c, f["classes"])]
        return nn.Sequential(*layers), (1, f["c"], f["h"], f["h"])
    raise lat.LatencyError(f"unknown latency segment kind {kind!r} in {key!r}")


def _timer(model: nn.Module, shape: tuple[int, ...], runtime: str, threads: int, device: str) -> Callable[[], float]:
    """A function that runs one forward pass and returns its wall time in milliseconds."""
    model = model.eval()
    x = torch.randn(*shape)
    if runtime == "onnxruntime":
        import onnxruntime as ort

        buf = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript-based exporter warns it is legacy; it is what works offline
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}

        def run_ort() -> float:
            t0 = time.perf_counter_ns()
            sess.run(None, feed)
            return (time.perf_counter_ns() - t0) / 1e6

        return run_ort
    model, x = model.to(device), x.to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run_torch() -> float:
        with torch.inference_mode():
            sync()
            t0 = time.perf_counter_ns()
            model(x)
            sync()
            return (time.perf_counter_ns() - t0) / 1e6

    return run_torch


def time_module(model: nn.Module, shape: tuple[int, ...], runtime: str = "torch", threads: int = 1,
                warmup: int = 5, repeats: int = 15, device: str = "cpu") -> np.ndarray:
    """Wall times (ms) of ``repeats`` forward passes after ``warmup`` untimed ones."""
    run = _timer(model, shape, runtime, threads, device)
    for _ in range(warmup):
        run()
    return np.array([run() for _ in range(repeats)])


STATISTICS = {"min": np.min, "median": np.median}


def statistic(name: str):
    if name not in STATISTICS:
        raise ValueError(f"latency.statistic must be one of {', '.join(STATISTICS)}, got {name!r}")
    return STATISTICS[name]


def measure_table(
    space: Space, ctx: Context, runtime: str = "torch", threads: int = 1, warmup: int = 5, repeats: int = 15,
    calibration: int = 5, device: str = "cpu", seed: int = 0, progress: Callable[[str], None] | None = None,
    stat: str = "min",
) -> pd.DataFrame:
    """The latency table of ``space`` as a DataFrame (one row per segment + the fixed row)."""
    if runtime not in lat.RUNTIMES:
        raise ValueError(f"latency.runtime must be one of {', '.join(lat.RUNTIMES)}, got {runtime!r}")
    if runtime == "onnxruntime" and device != "cpu":
        raise ValueError(f"latency.runtime onnxruntime measures on the CPU; got device {device!r}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    keys = [k for k in segment_keys(space, ctx) if k != lat.FIXED]
    rows = []
    t0 = time.time()
    for i, key in enumerate(keys):
        module, shape = segment_module(key, ctx.input_channels)
        times = time_module(module, shape, runtime, threads, warmup, repeats, device)
        rows.append({"segment": key, "ms": float(statistic(stat)(times)), "median": float(np.median(times)),
                     "q25": float(np.percentile(times, 25)),
                     "q75": float(np.percentile(times, 75)), "repeats": repeats})
        if progress and (i + 1) % 100 == 0:
            progress(f"latency table: {i + 1}/{len(keys)} segments, {time.time() - t0:.0f} s")
    seg = {r["segment"]: r["ms"] for r in rows}
    # The fixed term: whole models minus their segments, on a few archs across the cost range.
    rng = np.random.default_rng(seed)
    archs = [space.default_arch(), parse_arch("min", space), parse_arch("max", space)]
    archs += [tuple(int(rng.integers(n)) for n in space.sizes) for _ in range(max(calibration - 3, 0))]
    probe = lat.LatencyTable("<measuring>", {**seg, lat.FIXED: 0.0}, {})
    from layernas.core.cost import evaluate_pieces

    pieces = cost_pieces(space, ctx)
    diffs = []
    for arch in archs[:max(calibration, 1)]:
        model = build_model(space, arch, ctx.num_classes, ctx.input_size, ctx.input_channels)
        full = float(statistic(stat)(time_module(model, (1, ctx.input_channels, ctx.input_size, ctx.input_size),
                                           runtime, threads, warmup, repeats, device)))
        summed = float(evaluate_pieces(space, pieces, np.asarray([arch]), probe)["latency"][0])
        diffs.append(full - summed)
    # Negative where a runtime's per-call overhead, counted once per segment, exceeds what the
    # whole model adds (onnxruntime: one session call per model, one per segment when measuring).
    rows.append({"segment": lat.FIXED, "ms": float(np.median(diffs)), "median": float(np.median(diffs)),
                 "q25": float(np.min(diffs)),
                 "q75": float(np.max(diffs)), "repeats": len(diffs)})
    df = pd.DataFrame(rows)
    dev = lat.cpu_device() if device == "cpu" else f"{device}: {torch.cuda.get_device_name(device)}"
    meta = {"device": dev, "threads": int(threads), "runtime": runtime, "space_id": space.space_id,
            "input_size": ctx.input_size, "num_classes": ctx.num_classes, "input_channels": ctx.input_channels,
            "torch": torch.__version__, "warmup": warmup, "statistic": stat}
    if runtime == "onnxruntime":
        import onnxruntime as ort

        meta["onnxruntime"] = ort.__version__
    return df.assign(**meta)


def measure_models(space: Space, ctx: Context, archs: list[tuple[int, ...]], runtime: str = "torch", threads: int = 1,
                   warmup: int = 5, repeats: int = 15, device: str = "cpu") -> list[np.ndarray]:
    """End-to-end wall times (ms) of whole models, one array of repeats per arch."""
    torch.set_num_threads(threads)
    shape = (1, ctx.input_channels, ctx.input_size, ctx.input_size)
    return [time_module(build_model(space, a, ctx.num_classes, ctx.input_size, ctx.input_channels), shape,
                        runtime, threads, warmup, repeats, device) for a in archs]


def write_table(df: pd.DataFrame, path) -> None:
    from layernas.store.files import atomic_write_parquet

    atomic_write_parquet(path, df)


def check_prediction(space: Space, ctx: Context, samples: int = 30, runtime: str = "torch", threads: int = 1,
                     warmup: int = 5, repeats: int = 15, seed: int = 0, device: str = "cpu",
                     stat: str = "min") -> dict:
    """Predicted (table) vs measured (whole model) latency of ``samples`` random archs.

    Returns per-arch rows and the summary the docs quote: mean and max absolute percentage
    error, and the spread of the repeated measurements (interquartile range / median)."""
    from layernas.core.cost import cost_of
    from layernas.core.space import format_arch

    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    rng = np.random.default_rng(seed)
    archs = [tuple(int(rng.integers(n)) for n in space.sizes) for _ in range(samples)]
    pred = cost_of(space, archs, ctx.input_size, ctx.num_classes, ctx.input_channels, ctx.latency_table)["latency"]
    times = measure_models(space, ctx, archs, runtime, threads, warmup, repeats, device)
    meas = np.array([statistic(stat)(t) for t in times])
    spread = np.array([(np.percentile(t, 75) - np.percentile(t, 25)) / np.median(t) for t in times])
    ape = np.abs(pred - meas) / meas
    rows = [{"arch": format_arch(a), "predicted_ms": float(p), "measured_ms": float(m), "ape": float(e),
             "spread": float(s)} for a, p, m, e, s in zip(archs, pred, meas, ape, spread)]
    return {"samples": samples, "mape": float(ape.mean()), "max_ape": float(ape.max()),
            "median_spread": float(np.median(spread)), "threads": threads, "runtime": runtime, "statistic": stat,
            "rows": rows}


def final_model_latency(final_dir, plan: dict, table: str | None = None) -> dict:
    """Measured (and, with the run's table, predicted) latency of a finished final model, for
    its export card and the report's final table. Weights do not change latency, so the model
    is rebuilt from its preprocessing record."""
    from layernas.core.cost import cost_of
    from layernas.evaluate.loading import find_final, space_of

    rec = find_final(final_dir).preprocessing
    space = space_of(rec)
    arch = parse_arch(rec["arch"], space)
    ctx = Context.of(space, int(rec["input_size"]), int(rec["num_classes"]), int(rec["input_channels"]), table)
    runtime, threads = str(plan.get("runtime", "torch")), int(plan.get("threads", 1))
    times = measure_models(space, ctx, [arch], runtime, threads, int(plan.get("warmup", 5)),
                           int(plan.get("repeats", 15)))[0]
    stat = str(plan.get("statistic", "min"))
    out = {"measured_ms": float(statistic(stat)(times)), "statistic": stat,
           "spread": float((np.percentile(times, 75) - np.percentile(times, 25)) / np.median(times)),
           "device": lat.cpu_device(), "threads": threads, "runtime": runtime}
    if table:
        out["predicted_ms"] = float(cost_of(space, [arch], ctx.input_size, ctx.num_classes, ctx.input_channels,
                                            table)["latency"][0])
        out["table_device"] = lat.read_table(table).meta.get("device")
    return out
