"""The `layernas` command's JSON contracts and error behaviour (run as a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest


def layernas(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "layernas.cli.main", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


def test_space_list_names_every_shipped_space():
    out = layernas("space", "list").stdout
    for name in ("mobilenetv3-small-60m", "mobilenetv3-large-220m", "mobilenetv2-300m",
                 "mobilenetv2-1.4x-600m", "nb201-topology", "nats-size", "appendix-i", "mobilenet-tiny"):
        assert name in out


def test_space_stats_json_contract():
    st = json.loads(layernas("space", "stats", "nb201-topology", "--json").stdout)
    assert st["name"] == "nb201-topology" and st["num_layers"] == 3
    assert st["options_per_layer"] == [5, 25, 125]
    assert st["num_unique_models"] == 15625
    assert st["max_trials"] == 100 * 3 * 155
    assert st["min_cost"] < st["max_cost"]
    st = json.loads(layernas("space", "stats", "appendix-i", "-H", "4", "-K", "2", "--json").stdout)
    assert st["max_trials"] == 4 * 2 * 12 and (st["min_cost"], st["max_cost"]) == (3, 12)


def test_cost_json_contract():
    c = json.loads(layernas("cost", "--space", "appendix-i", "--arch", "3-0-0", "--json").stdout)
    assert c == {"madds": 9, "params": 0}
    d = json.loads(layernas("cost", "--space", "mobilenet-tiny", "--arch", "default", "--json").stdout)
    m = json.loads(layernas("cost", "--space", "mobilenet-tiny", "--arch", "min", "--json").stdout)
    assert d["madds"] > m["madds"] > 0 and d["params"] > m["params"] > 0
    bigger = json.loads(layernas("cost", "--space", "mobilenet-tiny", "--arch", "min", "--input-size", "32",
                                 "--json").stdout)
    assert bigger["madds"] > m["madds"]


def test_search_json_contract_and_files(tmp_path):
    out = tmp_path / "s"
    s = json.loads(layernas("search", "--space", "appendix-i", "--oracle", "layernas.examples.toy:appendix_i",
                            "--target-min", "8", "--target-max", "9", "-H", "4", "-K", "2", "-R", "2",
                            "--out", str(out), "--json", "--quiet").stdout)
    assert s["best"]["arch"] == "1-2-0" and s["best"]["cost"] == 9 and s["trials"] == 19
    assert {"dropped", "sweeps", "best", "trials"} <= set(s)
    hist = pd.read_parquet(out / "history.parquet")
    assert {"parent", "sweep", "layer", "bucket", "cost", "accuracy", "status"} <= set(hist.columns)
    assert (hist.status == "ok").sum() == 19
    t = pd.read_parquet(out / "r0" / "l0" / "buckets.parquet")
    assert list(t.columns) == ["layer", "bucket", "rank", "arch", "key", "cost", "accuracy", "expanded"]


def test_search_with_a_table_oracle_names_a_missing_arch(tmp_path):
    table = tmp_path / "t.csv"
    pd.DataFrame({"arch": ["0-0-0", "1-0-0"], "accuracy": [0.5, 0.4]}).to_csv(table, index=False)
    p = layernas("search", "--space", "appendix-i", "--oracle", str(table), "--target-min", "8",
                 "--target-max", "9", "-H", "4", check=False)
    assert p.returncode == 2
    assert "has no row for arch" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["space", "stats", "nope"], "unknown space"),
        (["cost", "--space", "appendix-i", "--arch", "9-9-9"], "out of range"),
        (["search", "--space", "appendix-i", "--oracle", "layernas.examples.toy:appendix_i",
          "--target-min", "50", "--target-max", "60"], "unreachable"),
        (["search", "--space", "appendix-i", "--oracle", "nosuchmodule:f", "--target-min", "8",
          "--target-max", "9"], "cannot import"),
        (["search", "--space", "appendix-i", "--oracle", "layernas.examples.toy:appendix_i",
          "--target-min", "8", "--target-max", "9", "-H", "0"], "buckets"),
    ],
)
def test_bad_input_is_one_error_line(args, needle):
    p = layernas(*args, check=False)
    assert p.returncode == 2
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0


def test_an_oracle_exported_from_a_search_history_is_accepted(tmp_path):
    """history.parquet repeats an arch (cached rows with the same accuracy, dropped rows with
    none): exported to CSV it is a usable oracle, one row per arch, and a search on it finds the
    same best model. Repeats that disagree are still refused, naming the arch and both values."""
    out = tmp_path / "s"
    first = json.loads(layernas("search", "--space", "appendix-i", "--oracle", "layernas.examples.toy:appendix_i",
                                "--target-min", "8", "--target-max", "9", "-H", "4", "-K", "2", "-R", "2",
                                "--out", str(out), "--json", "--quiet").stdout)
    hist = pd.read_parquet(out / "history.parquet")
    assert hist["arch"].duplicated().any() and hist["status"].eq("cached").any()
    table = tmp_path / "oracle.csv"
    hist.to_csv(table, index=False)
    again = json.loads(layernas("search", "--space", "appendix-i", "--oracle", str(table), "--target-min", "8",
                                "--target-max", "9", "-H", "4", "-K", "2", "-R", "2", "--json", "--quiet").stdout)
    assert again["best"]["arch"] == first["best"]["arch"] and again["best"]["accuracy"] == first["best"]["accuracy"]
    assert again["trials"] == first["trials"]

    cached = hist.index[hist["status"].eq("cached")][0]
    arch, acc = hist.loc[cached, "arch"], hist.loc[cached, "accuracy"]
    hist.loc[cached, "accuracy"] = acc + 0.01
    hist.to_csv(table, index=False)
    p = layernas("search", "--space", "appendix-i", "--oracle", str(table), "--target-min", "8", "--target-max", "9",
                 check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"arch '{arch}' appears more than once with different accuracy" in p.stderr
    assert repr(float(acc)) in p.stderr and repr(float(acc + 0.01)) in p.stderr
