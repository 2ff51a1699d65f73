"""The report's front page: what the search found, before any click.

``front_page`` turns ``search/summary.json`` (plus the final and transfer metrics where those
stages ran) into reStructuredText: the best model(s) with the arch string and its decoded
options, cost in human units, search (proxy) accuracy, final test accuracy, detection mAP, the
target band, whether the search finished or stopped at its budget, and the accuracy-vs-cost
figure embedded as a data URI. When no model lies in the target range the page says so and
what to change. Rule ``report_plots`` writes it to ``results/report/front.rst`` and
``workflow/report/workflow.rst`` includes it, so it is the first thing ``report.html`` shows.
"""

from __future__ import annotations

import base64
import math
import re
import textwrap
from pathlib import Path

import pandas as pd

from layernas.core.arch import Space, parse_arch
from layernas.core.describe import UNITS, decode, human_cost, human_number

MAX_MODELS = 3  # models side by side on the front page; all of them are in final_models.csv


def pct(x) -> str:
    """0.4213 -> ``42.1%``; None/NaN -> ``-``."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{float(x):.1%}"


def band_text(lo: float, hi: float, metric: str) -> str:
    """``3.50M to 4.00M MAdds``."""
    return f"{human_number(lo)} to {human_cost(hi, metric)}"


def rst_escape(text: str) -> str:
    """Plain text that rst must not read as markup (option labels, error messages)."""
    return re.sub(r"([\\`*_|\[\]<>])", r"\\\1", str(text))


def options_of(space: Space | None, arch: str) -> str | None:
    if space is None:
        return None
    try:
        return decode(space, arch)
    except (ValueError, IndexError):
        return None


def costs_of(space: Space | None, arch: str, metric: str, cost: float | None, cost_kwargs: dict | None) -> str:
    """``3.94M MAdds / 0.12M params``: the target metric first, the other one where the
    space has it (the Appendix I toy space counts no params)."""
    values: dict = {}
    if space is not None:
        try:
            from layernas.core.cost import cost_of

            c = cost_of(space, [parse_arch(arch, space)], **(cost_kwargs or {}))
            values = {m: float(c[m][0]) for m in ("madds", "params") if m in c}
        except (ValueError, IndexError, KeyError):
            pass
    if cost is not None:
        values[metric] = float(cost)
    parts = [human_cost(values.get(metric), metric)]
    parts += [human_cost(v, m) for m, v in values.items() if m != metric and v]
    return " / ".join(parts)


def figure_rst(path: str | Path, alt: str, caption: str) -> str:
    """An rst figure whose image is a data URI (the report is one self-contained file; rst
    caps a line at 10,000 characters, so the URI is wrapped: docutils drops the whitespace)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    lines = textwrap.wrap(f"data:image/png;base64,{data}", 76)
    head = ".. figure:: " + lines[0] + "\n" + "".join(f"   {line}\n" for line in lines[1:])
    return head + f"   :alt: {alt}\n   :width: 100%\n\n   {caption}\n"


def _final_of(ctx: dict, row: dict) -> dict | None:
    fk = row.get("final_key")
    return ctx["finals"].get(fk) if fk else None


def _transfer_of(ctx: dict, row: dict) -> dict | None:
    fk = row.get("final_key")
    return ctx["transfers"].get(fk) if fk else None


def _test_text(final: dict | None) -> str | None:
    if final is None:
        return None
    if final.get("status") != "ok":
        return "failed"
    return pct(final.get("test_accuracy"))


def _map_text(tr: dict | None) -> str | None:
    if tr is None:
        return None
    if tr.get("status", "ok") != "ok" or tr.get("map") is None:
        return "failed"
    return f"{tr['map']:.3f}"


def _reference(tr: dict | None) -> tuple[str, str] | None:
    """(name, mAP) of the MAdds-matched reference backbone of a transfer run."""
    ref = (tr or {}).get("reference") or {}
    if ref.get("map") is None:
        return None
    return f"{ref.get('name', 'reference')} x{ref.get('width_mult', '')}", f"{ref['map']:.3f}"


def _models_table(top: list[dict], ctx: dict) -> str:
    """The top models side by side, one column each (rows: arch, options, cost, accuracies);
    the final and transfer rows only where those stages ran (otherwise one line says why)."""
    finals = [_test_text(_final_of(ctx, r)) for r in top]
    transfers = [_transfer_of(ctx, r) for r in top]
    has_final = any(f is not None for f in finals)
    has_map = any(t is not None for t in transfers)
    archs = [str(r["arch"]) for r in top]
    rows = [["", *(f"#{i}" for i in range(1, len(top) + 1))],
            ["arch", *(f"``{a}``" for a in archs)]]
    opts = [options_of(ctx["space"], a) for a in archs]
    if any(opts):
        rows.append(["options", *(rst_escape(o) if o else "-" for o in opts)])
    rows.append(["cost", *(costs_of(ctx["space"], a, ctx["metric"], r.get("cost"), ctx["cost_kwargs"])
                           for a, r in zip(archs, top))])
    rows.append(["search accuracy", *(pct(r.get("accuracy")) for r in top)])
    if has_final:
        rows.append(["final test accuracy", *(f or "not run" for f in finals)])
    if has_map:
        cells = []
        for tr in transfers:
            text = _map_text(tr) or "not run"
            ref = _reference(tr)
            cells.append(f"{text} (reference {ref[1]})" if ref and text != "failed" else text)
        rows.append(["detection mAP", *cells])
    out = [".. list-table::", "   :header-rows: 1", "   :stub-columns: 1", ""]
    for cells in rows:
        out.append(f"   * - {cells[0]}")
        out.extend(f"     - {c}" for c in cells[1:])
    notes = [f"Search accuracy: {ctx['search_acc']}."]
    if has_final:
        notes.append("Final test accuracy: retrained with the final recipe on train + validation, "
                     "measured on the test split.")
    else:
        notes.append(f"Final test accuracy: {ctx['final_note']}.")
    if has_map:
        refs = [r for r in map(_reference, transfers) if r]
        notes.append("Detection mAP: SSDLite on the found backbone" + (
            f"; reference: the same detector on a MAdds-matched {rst_escape(refs[0][0].split(' x')[0])}, "
            "same recipe." if refs else "."))
    else:
        notes.append(f"Detection mAP: {ctx['transfer_note']}.")
    return "\n".join(out) + "\n\n" + " ".join(notes) + "\n"


def _headline(best: dict, ctx: dict, band: str, space_name: str) -> str:
    arch = str(best["arch"])
    opts = options_of(ctx["space"], arch)
    text = (f"LayerNAS searched space ``{space_name}`` for the most accurate model costing **{band}**. "
            f"The best it found is ``{arch}``" + (f" ({rst_escape(opts)})" if opts else "")
            + f": **{pct(best.get('accuracy'))}** search accuracy at "
            f"{costs_of(ctx['space'], arch, ctx['metric'], best.get('cost'), ctx['cost_kwargs'])}")
    final = _final_of(ctx, best)
    if final is not None and final.get("status") == "ok":
        text += f", **{pct(final.get('test_accuracy'))}** test accuracy after final retraining"
    tr = _transfer_of(ctx, best)
    if _map_text(tr) not in (None, "failed"):
        text += f", detection mAP **{tr['map']:.3f}**"
        ref = _reference(tr)
        if ref:
            text += f" ({rst_escape(ref[0])} reference: {ref[1]})"
    return text + ".\n"


def _search_line(s: dict) -> str:
    trials, failed, budget = s.get("trials", 0), s.get("failed", 0), s.get("budget")
    of = f" of a budget of {budget}" if budget is not None else ""
    failed_text = f" ({failed} failed)" if failed else ""
    sweeps = s.get("sweeps")
    sweeps_text = f", in {sweeps} sweep{'s' if sweeps != 1 else ''}" if sweeps else ""
    if s.get("stopped_by_budget"):
        return (f"The search **stopped at its budget**: {trials} trials{failed_text}{of}{sweeps_text}; "
                f"layers it had not reached were not searched (raise ``search.budget`` to go on).")
    return f"The search **finished**: {trials} trials{failed_text}{of}{sweeps_text}."


def _round_out(x: float, up: bool) -> float:
    """x rounded to 3 significant digits away from the target (a bound that still takes it in)."""
    if x == 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(abs(x))) - 2)
    return (math.ceil(x / step) if up else math.floor(x / step)) * step


def _nearest(history: pd.DataFrame | None, lo: float, hi: float, metric: str, space) -> tuple[list[str], list[str]]:
    """Where the trained models lie relative to the target: their cost range and the nearest
    one below and above it; and the widened bounds that would take those in."""
    if history is None or history.empty:
        return [], []
    ok = history[(history["status"] == "ok")].copy()
    ok = ok[pd.to_numeric(ok["accuracy"], errors="coerce").notna()]
    if ok.empty:
        return ["No trained model gave an accuracy (see the failed trials under *Results*, *Search*)."], []
    out = [f"The trained models cost {band_text(ok['cost'].min(), ok['cost'].max(), metric)}."]
    widen = []
    for side, part in (("below", ok[ok["cost"] < lo].nlargest(1, "cost")),
                       ("above", ok[ok["cost"] > hi].nsmallest(1, "cost"))):
        if len(part):
            r = part.iloc[0]
            opts = options_of(space, str(r["arch"]))
            label = f"``{r['arch']}``" + (f" ({rst_escape(opts)})" if opts else "")
            out.append(f"Nearest {side} the range: {label} at {human_cost(r['cost'], metric)}, "
                       f"accuracy {pct(float(r['accuracy']))}.")
            bound = "min" if side == "below" else "max"
            widen.append(f"``{bound}: {_round_out(float(r['cost']), up=side == 'above'):g}`` takes in ``{r['arch']}``")
    return out, widen


def front_page(summary: dict, *, space: Space | None = None, cost_kwargs: dict | None = None,
               history: pd.DataFrame | None = None, finals: dict[str, dict] | None = None,
               transfers: dict[str, dict] | None = None, final_note: str = "not run",
               transfer_note: str = "not run", search_accuracy: str = "validation accuracy after proxy training",
               figure: str | Path | None = None, results: str = "results") -> str:
    """The front page as reStructuredText. ``finals``/``transfers``: metrics.json contents by
    final key; ``*_note``: what to say where a stage did not run; ``figure``: the
    accuracy-vs-cost PNG to embed."""
    s = summary
    lo, hi = (float(x) for x in s["target"])
    metric = s.get("metric", "madds")
    unit = UNITS.get(metric, metric)
    band = band_text(lo, hi, metric)
    top = list(s.get("top") or [])
    if not top and s.get("best"):
        top = [s["best"]]
    ctx = {"space": space, "metric": metric, "cost_kwargs": cost_kwargs, "finals": finals or {},
           "transfers": transfers or {}, "final_note": final_note, "transfer_note": transfer_note,
           "search_acc": search_accuracy}
    space_name = s.get("space", "?")
    out: list[str] = []

    def title(text: str, ch: str = "=") -> None:
        out.append(f"{text}\n{ch * len(text)}\n")

    fig = None
    if figure is not None and Path(figure).exists():
        fig = figure_rst(
            figure, "accuracy against cost with the target band",
            f"Accuracy against cost ({unit}) of every trained model (dots): the target range "
            f"{rst_escape(band)} (green band), the Pareto front (red)"
            + (", the best models in the range (stars)" if top else "")
            + ". The bucket tables, final models, detection transfer and failed trials are under "
            "*Results* on the left.")
    if top:
        best = top[0]
        title(f"Found {best['arch']}")
        out.append(_headline(best, ctx, band, space_name))
        out.append(_search_line(s) + "\n")
        if fig:
            out.append(fig)
        shown = top[:MAX_MODELS]
        more = f" ({len(top) - MAX_MODELS} more under *Final models*)" if len(top) > MAX_MODELS else ""
        out.append(f"**The {'best model' if len(shown) == 1 else f'{len(shown)} best models'} in {band}**, "
                   f"ranked by search accuracy{more}:\n")
        out.append(_models_table(shown, ctx))
    else:
        title("No model found in the target range")
        out.append(f"LayerNAS searched space ``{space_name}`` for models costing **{band}** and "
                   f"**found none**: none of the {s.get('trials', 0)} models it trained falls in that "
                   f"range, so there is no best model, no final retraining and no transfer.\n")
        out.append(_search_line(s) + "\n")
        where, widen = _nearest(history, lo, hi, metric, space)
        out.extend(line + "\n" for line in where)
        if fig:
            out.append(fig)
        out.append("**What to change:**\n")
        tips = [f"**Widen the target**: ``target: {{metric: {metric}, min: ..., max: ...}}`` in the config "
                f"(now {band})" + (": " + "; ".join(widen) if widen else "") + "."]
        budget = s.get("budget")
        if s.get("stopped_by_budget"):
            tips.append(f"**Raise** ``search.budget`` (now {budget}): the search stopped at its budget "
                        "before it had expanded every candidate, so more trials reach further.")
        else:
            tips.append(f"**Raise** ``search.budget`` only together with the search's breadth: this search "
                        f"finished within its budget ({budget}), so also keep more candidates per cost bucket "
                        "(``search.replicas``) or expand more per layer (``search.per_sweep``).")
        out.append("".join(f"- {t}\n" for t in tips))
        out.append("Then run ``snakemake --cores all`` again: every trial already done is reused.\n")
    out.append(f"Every number traces to a file under ``{results}/``: this page to ``search/summary.json``, "
               "trials to ``trials/<key>/``, final models to ``final/<key>/``, bucket tables to "
               "``search/r<sweep>/l<layer>/buckets.parquet``.\n")
    return "\n".join(out)
