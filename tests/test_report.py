"""The report: tables and curves from search history (Pareto front, best-so-far in the target,
failed trials with their recorded errors, the transfer and final-models tables), the front page
written from summary.json (a model found, no model in the target range), and a real report of a
real tiny run opened in a headless Chromium: the front page names the best model with its
options and shows the accuracy-vs-cost figure.

The browser test installs Debian's ``chromium`` (apt-get, as root) and Playwright's Python
package (pip) when they are missing, and is skipped, with the reason, only where it cannot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from docutils.core import publish_parts

from layernas.core.describe import decode
from layernas.core.space import load_space
from layernas.workflow.frontpage import front_page
from layernas.workflow.report import best_so_far, failed_table, final_table, pareto_front, transfer_table

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
TEST_CONFIG = str(ROOT / ".test" / "config.yaml")
CHROMIUM = "/usr/bin/chromium"


def history(rows):
    cols = ["order", "sweep", "layer", "arch", "cost", "accuracy", "status", "key"]
    return pd.DataFrame(rows, columns=cols)


def test_pareto_front_keeps_only_models_nothing_beats_on_both():
    cost = np.array([1.0, 2.0, 3.0, 2.5, 4.0])
    acc = np.array([0.5, 0.7, 0.6, 0.8, 0.8])
    assert sorted(pareto_front(cost, acc).tolist()) == [0, 1, 3]


def test_best_so_far_counts_failures_as_trials_but_not_as_best():
    h = history([
        (0, 0, 0, "0-0", 5.0, 0.9, "ok", "a"),        # outside the target
        (1, 0, 0, "1-0", 3.0, 0.6, "ok", "b"),
        (2, 0, 0, "2-0", 3.0, None, "failed", "c"),
        (3, 0, 1, "2-1", 2.5, 0.7, "ok", "d"),
        (4, 0, 1, "2-2", 2.0, 0.8, "cached", "d"),     # cached: not a new evaluation
    ])
    curve = best_so_far(h, 2.0, 4.0)
    assert curve["trial"].tolist() == [1, 2, 3, 4]
    assert np.isnan(curve["best"].iloc[0])
    assert curve["best"].iloc[1:].tolist() == [0.6, 0.6, 0.7]


def test_failed_table_lists_each_failed_trial_with_its_error(tmp_path):
    trials = tmp_path / "trials"
    for key, err in (("c", "RuntimeError: simulated crash"), ("e", "ValueError: oracle returned nan")):
        (trials / key).mkdir(parents=True)
        (trials / key / "metrics.json").write_text(json.dumps({"status": "failed", "error": err}))
    (trials / "f").mkdir()
    (trials / "f" / "metrics.json").write_text("{not json")
    h = history([
        (0, 0, 0, "0-0", 3.0, 0.6, "ok", "a"),
        (1, 0, 0, "1-0", 3.0, None, "failed", "c"),
        (2, 0, 1, "1-1", 3.0, None, "failed", "e"),
        (3, 1, 1, "1-1", 3.0, None, "failed", "e"),   # the same trial met again: listed once
        (4, 1, 2, "1-1-1", 3.0, None, "failed", "f"),
    ])
    t = failed_table(h, trials)
    assert t["key"].tolist() == ["c", "e", "f"]
    assert t["error"].iloc[0] == "RuntimeError: simulated crash"
    assert "nan" in t["error"].iloc[1]
    assert t["error"].iloc[2].startswith("metrics.json unreadable")


def test_failed_table_of_a_clean_search_is_empty_with_columns(tmp_path):
    t = failed_table(history([(0, 0, 0, "0-0", 3.0, 0.6, "ok", "a")]), tmp_path)
    assert t.empty and list(t.columns) == ["key", "sweep", "layer", "arch", "cost", "error"]


def test_transfer_table_puts_found_and_reference_side_by_side(tmp_path):
    d = tmp_path / "k1"
    d.mkdir()
    m = {"arch": "1-2", "map": 0.2, "pretrained": True,
         "reference": {"name": "mobilenet_v3_small", "width_mult": 1.5, "map": 0.1, "pretrained": False}}
    (d / "metrics.json").write_text(json.dumps(m))
    t = transfer_table([d / "metrics.json"])
    assert t["backbone"].tolist() == ["found 1-2", "mobilenet_v3_small x1.5"]
    assert t["map"].tolist() == [0.2, 0.1] and set(t["key"]) == {"k1"}


def test_transfer_table_leaves_out_per_size_ap_columns_without_any_value(tmp_path):
    """The generated 80 px set has no large object: COCOeval gives -1 (recorded as null), so
    the column would be empty in every row."""
    d = tmp_path / "k1"
    d.mkdir()
    m = {"arch": "1-2", "map": 0.2, "ap_small": 0.1, "ap_medium": 0.3, "ap_large": None,
         "reference": {"name": "mobilenet_v3_small", "width_mult": 1.5, "map": 0.1, "ap_small": 0.05,
                       "ap_medium": 0.2, "ap_large": None}}
    (d / "metrics.json").write_text(json.dumps(m))
    t = transfer_table([d / "metrics.json"])
    assert "ap_large" not in t.columns and {"ap_small", "ap_medium"} <= set(t.columns)


# --------------------------------------------------------------------------- front page

SPACE = "mobilenet-tiny"
BEST, SECOND = "3-5-0-0-0-0-0", "1-0-0-0-0-0-0"


def summary(**change) -> dict:
    """A summary.json as search_summary writes it (mobilenet-tiny, a 3.5M-4.0M MAdds target)."""
    s = {"space": SPACE, "space_id": "mobilenet-tiny@v1", "target": [3.5e6, 4.0e6], "metric": "madds",
         "buckets": 10, "replicas": 1, "per_sweep": 2, "evaluator": "train", "stages": 7, "sweeps": 1,
         "trials": 30, "failed": 1, "cached": 2, "dropped": 5, "stopped_by_budget": True, "budget": 30,
         "best": {"arch": BEST, "key": "k1", "cost": 3.94e6, "accuracy": 0.8125},
         "top": [{"arch": BEST, "key": "k1", "final_key": "f1", "cost": 3.94e6, "accuracy": 0.8125},
                 {"arch": SECOND, "key": "k2", "final_key": "f2", "cost": 3.6e6, "accuracy": 0.79}]}
    return s | change


def rendered(rst: str) -> str:
    """The page as the report renders it (docutils HTML); any rst warning fails the test."""
    return publish_parts(rst, writer="html", settings_overrides={"halt_level": 2, "report_level": 2})["html_body"]


def test_front_page_names_the_best_model_its_options_and_every_accuracy():
    space = load_space(SPACE)
    finals = {"f1": {"status": "ok", "test_accuracy": 0.8431, "epochs": 2.0},
              "f2": {"status": "failed", "error": "RuntimeError: CUDA out of memory"}}
    transfers = {"f1": {"status": "ok", "map": 0.1234,
                        "reference": {"name": "mobilenet_v3_small", "width_mult": 0.75, "map": 0.0987}}}
    rst = front_page(summary(), space=space, finals=finals, transfers=transfers)
    html = rendered(rst)
    first = rst.splitlines()[0]
    assert first == f"Found {BEST}"
    assert decode(space, BEST) in rst and decode(space, SECOND) in rst
    for text in ("3.50M to 4.00M MAdds", "3.94M MAdds / ", "81.2%", "84.3%", "0.123", "0.099",
                 "stopped at its budget", "search.budget", "30 trials (1 failed) of a budget of 30, in 1 sweep"):
        assert text in rst, text
    assert "failed" in html and "System Message" not in html
    assert "{'metric'" not in rst and "3500000" not in rst  # no raw dict, no raw numbers


def test_front_page_of_a_tabular_run_says_why_final_and_transfer_are_missing():
    rst = front_page(summary(stopped_by_budget=False, budget=96, trials=19, failed=0), space=load_space(SPACE),
                     final_note="not run (evaluator tabular)", transfer_note="not run (needs a final model)")
    assert "The search **finished**: 19 trials of a budget of 96" in rst
    assert "Final test accuracy: not run (evaluator tabular)." in rst
    assert "Detection mAP: not run (needs a final model)." in rst
    assert "final test accuracy" not in rst.split("list-table")[1].split("Search accuracy:")[0]
    rendered(rst)


def test_front_page_without_a_model_in_the_target_range_says_so_and_what_to_change(tmp_path):
    """summary.json with ``best: null`` and no top models (nothing evaluated in the range)."""
    hist = pd.DataFrame({"arch": ["0-0-0-0-0-0-0", "3-0-0-0-0-0-0", "2-0-0-0-0-0-0"],
                         "cost": [5.2e6, 4.56e6, 3.1e6], "accuracy": [0.9, 0.88, np.nan],
                         "status": ["ok", "ok", "failed"]})
    figure = tmp_path / "accuracy_vs_cost.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    s = summary(best=None, top=[], target=[3.5e6, 4.0e6])
    rst = front_page(s, space=load_space(SPACE), history=hist, figure=figure)
    assert rst.splitlines()[0] == "No model found in the target range"
    for text in ("**found none**", "3.50M to 4.00M MAdds", "The trained models cost 4.56M to 5.20M MAdds",
                 "``3-0-0-0-0-0-0`` (f12", "**Widen the target**", "``max: 4.56e+06``",
                 "``search.budget`` (now 30): the search stopped at its budget", "data:image/png;base64,"):
        assert text in rst, text
    rendered(rst)
    # a search that was not cut short by its budget: a larger budget alone would not help
    rst = front_page(summary(best=None, top=[], stopped_by_budget=False), history=hist)
    assert "finished within its budget (30)" in rst and "search.replicas" in rst


def test_final_models_table_has_a_value_in_every_column(tmp_path):
    """val_accuracy is the proxy trial's accuracy of that arch (summary.json top = top.parquet)."""
    paths = []
    for fk, arch, acc in (("f1", BEST, 0.84), ("f2", SECOND, 0.82)):
        (tmp_path / fk).mkdir()
        m = {"arch": arch, "status": "ok", "madds": 3939330, "params": 120345, "test_accuracy": acc,
             "epochs": 2.0, "wall_seconds": 40.0, "error": None}
        (tmp_path / fk / "metrics.json").write_text(json.dumps(m))
        paths.append(tmp_path / fk / "metrics.json")
    t = final_table(paths, summary(), load_space(SPACE))
    assert t["val_accuracy"].tolist() == [0.8125, 0.79]
    assert t["options"].iloc[0] == decode(load_space(SPACE), BEST)
    assert not t.isna().any().any(), t.isna().any()
    # without final retraining: the top models, still with their search accuracy
    t = final_table([], summary(), load_space(SPACE))
    assert t["arch"].tolist() == [BEST, SECOND] and not t.isna().any().any()


# --------------------------------------------------------------------------- the real report


def _why_no_browser() -> str | None:
    """Install what the browser test needs where it can: Debian's chromium (apt-get, root) and
    Playwright's Python package (pip; only the library: it drives the system's chromium, its
    own browser downloads are not used). The reason it cannot, otherwise."""
    if not Path(CHROMIUM).exists():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            return f"no {CHROMIUM}, and installing Debian's chromium needs root and apt-get"
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "chromium"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if not Path(CHROMIUM).exists():
            return f"apt-get install chromium failed:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "playwright"],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            return f"playwright is not installed and pip could not install it:\n{proc.stderr[-1500:]}"
    return None


@pytest.fixture(scope="module")
def browser():
    why = _why_no_browser()
    if why:
        pytest.skip(f"browser test skipped: {why}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def run_workflow(wd: Path, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([*SNAKEMAKE, "--cores", "2", "-d", str(wd), "--configfile", TEST_CONFIG, *extra],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_real_report_front_page_shows_the_best_model_and_the_figure(tmp_path, browser):
    """The tabular .test run, then `snakemake --report report.html`, opened in Chromium: the
    first view names the best model (arch and decoded options) and its accuracy, and the
    accuracy-vs-cost figure has loaded; the final models table has a value in every column."""
    wd = tmp_path / "run"
    run_workflow(wd)
    run_workflow(wd, "--report", "report.html", timeout=120)
    res = wd / "results"
    s = json.loads((res / "search" / "summary.json").read_text())
    best = s["best"]["arch"]
    options = decode(load_space(s["space"]), best)
    assert (res / "report" / "front.rst").read_text().startswith(f"Found {best}")
    table = pd.read_csv(res / "report" / "final_models.csv")
    assert len(table) and not table.isna().any().any(), table.isna().any()

    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    try:
        page.goto((wd / "report.html").as_uri())
        front = page.locator(".prose").first
        front.wait_for(timeout=30_000)
        img = front.locator("img").first
        img.wait_for(timeout=30_000)
        page.wait_for_function("img => img.complete", arg=img.element_handle(), timeout=30_000)
        text = front.inner_text()
        page.screenshot(path=str(tmp_path / "front.png"))
        assert f"Found {best}" in text, text[:2000]
        assert options in text and f"{s['best']['accuracy']:.1%}" in text, text[:2000]
        assert "8 to 9 MAdds" in text and "The search finished" in text, text[:2000]
        assert "System Message" not in text and "{'" not in text, text[:2000]
        width = img.evaluate("img => img.naturalWidth")
        assert width > 0 and img.get_attribute("src").startswith("data:image/png;base64,")
        assert img.is_visible()
    finally:
        page.close()
