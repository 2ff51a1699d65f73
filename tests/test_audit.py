"""`layernas audit`, `clean-weights` and `disk_usage` on a real results directory: one run of
the .test workflow (Appendix I toy space, table lookups) per module, copied per test and then
damaged the way real runs get damaged (killed trials, truncated files, edited tables, renamed
directories, leftovers of other searches)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from layernas.cli.main import main
from layernas.core.space import load_space
from layernas.evaluate.trial import evaluate_tabular
from layernas.store.audit import audit, disk_usage
from layernas.store.keys import train_hash, trial_key
from layernas.store.status import collect_status

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / ".test" / "config.yaml"
# Late stages off: only the search and its trials matter here, and they keep the run short.
OVERRIDES = {"transfer": {"activate": False}, "report": {"activate": False}}


def snakemake(workdir: Path, *extra: str, overrides: dict | None = None) -> None:
    cfg = workdir.parent / f"{workdir.name}-overrides.yaml"
    cfg.write_text(yaml.safe_dump({**OVERRIDES, **(overrides or {})}))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2", "-d", str(workdir),
           *extra, "--configfile", str(TEST_CONFIG), str(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One finished workflow run (its working directory, results/ inside)."""
    wd = tmp_path_factory.mktemp("audit") / "wd"
    snakemake(wd)
    return wd


@pytest.fixture
def results(run_dir, tmp_path) -> Path:
    """A private copy of the run's results directory, free to damage."""
    return Path(shutil.copytree(run_dir / "results", tmp_path / "results"))


def trial_keys(results: Path) -> list[str]:
    return sorted(p.name for p in (results / "trials").iterdir())


def table_key(results: Path, table: str = "search/r1/l1/buckets.parquet") -> str:
    return str(pd.read_parquet(results / table)["key"].iloc[0])


def problems(results: Path, *args: str, capsys) -> tuple[int, dict]:
    """Run `layernas audit --json` in-process: (exit status, parsed output)."""
    capsys.readouterr()
    rc = main(["audit", str(results), "--json", *args])
    return rc, json.loads(capsys.readouterr().out)


def only(report: dict) -> dict:
    assert len(report["problems"]) == 1, report["problems"]
    return report["problems"][0]


def add_tabular_trial(results: Path, arch: str, seed: int = 0, oracle: str = "layernas.examples.toy:appendix_i") -> Path:
    """A trial made exactly as the workflow makes one, e.g. left behind by another search."""
    space = load_space("appendix-i")
    config = {"evaluator": "tabular", "oracle": oracle, "seed": seed}
    key = trial_key(space.space_id, arch, train_hash(config), seed)
    evaluate_tabular(config, space, arch, key, results / "trials" / key, seed)
    return results / "trials" / key


# --------------------------------------------------------------------------- audit


def test_clean_run_exits_0_with_no_problems(results, capsys):
    rc, report = problems(results, capsys=capsys)
    assert rc == 0 and report["clean"] and report["problems"] == []
    assert report["checked"]["trials"] == len(trial_keys(results)) > 0
    assert main(["audit", str(results)]) == 0
    assert "clean" in capsys.readouterr().out


def test_truncated_metrics_is_a_corrupt_trial(results, capsys):
    key = table_key(results)
    m = results / "trials" / key / "metrics.json"
    m.write_text(m.read_text()[:25])
    rc, report = problems(results, capsys=capsys)
    p = only(report)
    assert rc == 1 and report["errors"] == 1
    assert (p["kind"], p["severity"], p["path"], p["fixable"]) == ("corrupt", "error", str(m.parent), True)
    assert "not valid JSON" in p["message"] and "--fix" in p["action"]


def test_deleted_metrics_is_a_partial_trial(results, capsys):
    key = table_key(results)
    (results / "trials" / key / "metrics.json").unlink()
    rc, report = problems(results, capsys=capsys)
    p = only(report)
    assert rc == 1 and (p["kind"], p["path"]) == ("partial", str(results / "trials" / key))


def test_deleted_trial_dir_is_a_missing_trial(results, capsys):
    key = table_key(results)
    shutil.rmtree(results / "trials" / key)
    rc, report = problems(results, capsys=capsys)
    p = only(report)
    assert rc == 1 and (p["kind"], p["path"], p["fixable"]) == ("missing-trial", str(results / "trials" / key), False)
    assert "rerun the same snakemake command" in p["action"]


def test_garbage_bucket_table_is_a_corrupt_table(results, capsys):
    table = results / "search" / "r0" / "l2" / "buckets.parquet"
    table.write_bytes(b"not parquet at all")
    rc, report = problems(results, capsys=capsys)
    p = only(report)
    assert rc == 1 and (p["kind"], p["path"], p["fixable"]) == ("corrupt-table", str(table), False)


def test_edited_cost_in_bucket_table_is_a_cost_mismatch(results, capsys):
    table = results / "search" / "r1" / "l1" / "buckets.parquet"
    df = pd.read_parquet(table)
    df.loc[0, "cost"] += 0.5
    df.to_parquet(table, index=False)
    rc, report = problems(results, capsys=capsys)
    p = only(report)
    assert rc == 1 and (p["kind"], p["path"]) == ("cost-mismatch", str(table))
    assert f"arch {df['arch'].iloc[0]}" in p["message"]


def test_edited_accuracy_in_final_tables_is_an_accuracy_mismatch(results, capsys):
    table = results / "search" / "tables.parquet"
    df = pd.read_parquet(table)
    df.loc[2, "accuracy"] = 0.99
    df.to_parquet(table, index=False)
    rc, report = problems(results, capsys=capsys)
    p = only(report)
    assert rc == 1 and (p["kind"], p["path"]) == ("accuracy-mismatch", str(table))


def test_renamed_trial_dir_is_a_key_mismatch_naming_the_right_key(results, capsys):
    key = table_key(results)
    wrong = results / "trials" / "0123456789abcdef"
    (results / "trials" / key).rename(wrong)
    rc, report = problems(results, capsys=capsys)
    p = only(report)  # the right key's absence is part of this one problem, not a second one
    assert rc == 1 and (p["kind"], p["path"], p["fixable"]) == ("key-mismatch", str(wrong), True)
    assert key in p["message"] and f"trials/{key}" in p["action"]


def test_orphan_trial_is_a_warning_and_exit_0(results, capsys):
    orphan = add_tabular_trial(results, "3-3-3")  # same settings, but no table asks for it
    other = add_tabular_trial(results, "0-0-0", seed=7)  # another search's seed
    rc, report = problems(results, capsys=capsys)
    assert rc == 0 and report["errors"] == 0
    assert sorted((p["kind"], p["severity"], p["path"]) for p in report["problems"]) == sorted(
        [("orphan", "warning", str(orphan)), ("orphan", "warning", str(other))])
    assert any("another space, training config or seed" in p["message"] for p in report["problems"])


def test_stage_files_of_an_earlier_longer_search_are_stale_warnings(results, capsys):
    shutil.copytree(results / "search" / "r1", results / "search" / "r4")  # this search ends with sweep r3
    rc, report = problems(results, capsys=capsys)
    assert rc == 0
    assert [(p["kind"], p["path"]) for p in report["problems"]] == [
        ("stale-stage", str(results / "search" / "r4" / f"l{l}")) for l in range(3)]


def test_failed_trial_is_info_with_its_error(results, capsys):
    failed = add_tabular_trial(results, "3-3-3", oracle="layernas.examples.toy:no_such_oracle")
    rc, report = problems(results, capsys=capsys)
    assert rc == 0
    info = [p for p in report["problems"] if p["kind"] == "failed-trial"]
    assert len(info) == 1 and info[0]["severity"] == "info" and info[0]["path"] == str(failed)
    assert "no_such_oracle" in info[0]["message"]


def test_json_problems_have_the_contract_keys_and_text_has_one_line_each(results, capsys):
    (results / "trials" / table_key(results) / "metrics.json").unlink()
    (results / "trials" / "feedfacefeedface").mkdir()
    rc, report = problems(results, capsys=capsys)
    assert rc == 1 and {"results", "clean", "errors", "warnings", "infos", "checked", "problems", "removed"} <= set(report)
    for p in report["problems"]:
        assert set(p) == {"path", "kind", "severity", "message", "action", "fixable"}
    assert main(["audit", str(results)]) == 1
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("error")]
    assert len(lines) == 2 and all(" -> " in ln and str(results) in ln for ln in lines)


def test_not_a_results_dir_exits_2(tmp_path, capsys):
    assert main(["audit", str(tmp_path)]) == 2
    assert "layernas: error:" in capsys.readouterr().err


def test_bad_flag_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["audit", str(tmp_path), "--no-such-flag"])
    assert exc.value.code == 2


def test_fix_removes_only_broken_trials_and_rerun_makes_audit_clean(run_dir, tmp_path, capsys):
    wd = Path(shutil.copytree(run_dir, tmp_path / "wd"))
    results = wd / "results"
    keys = trial_keys(results)
    truncated, deleted, renamed = keys[0], keys[1], keys[2]
    (results / "trials" / truncated / "metrics.json").write_text('{"status": "o')
    (results / "trials" / deleted / "metrics.json").unlink()
    (results / "trials" / renamed).rename(results / "trials" / "0000000000000000")
    (results / "trials" / "ffffffffffffffff").mkdir()  # killed before writing anything
    orphan = add_tabular_trial(results, "3-3-3")
    tables = {p: p.stat().st_mtime_ns for p in (results / "search").rglob("*.parquet")}
    good = {k: (results / "trials" / k / "metrics.json").stat().st_mtime_ns for k in keys[3:]}

    rc, report = problems(results, "--fix", capsys=capsys)
    assert rc == 1
    assert sorted(report["removed"]) == sorted(str(results / "trials" / k) for k in
                                               (truncated, deleted, "0000000000000000", "ffffffffffffffff"))
    assert orphan.is_dir() and {p: p.stat().st_mtime_ns for p in tables} == tables
    assert {k: (results / "trials" / k / "metrics.json").stat().st_mtime_ns for k in keys[3:]} == good

    rc, report = problems(results, capsys=capsys)  # now missing, until the rerun the actions name
    assert rc == 1 and {p["kind"] for p in report["problems"] if p["severity"] == "error"} == {"missing-trial"}
    snakemake(wd)  # the same command
    rc, report = problems(results, capsys=capsys)
    assert rc == 0 and [p["kind"] for p in report["problems"]] == ["orphan"]
    assert {k: (results / "trials" / k / "metrics.json").stat().st_mtime_ns for k in keys[3:]} == good
    assert set(keys) <= set(trial_keys(results))


def test_audit_of_1000_trials_takes_seconds(results, capsys):
    space = load_space("appendix-i")
    src = next((results / "trials").iterdir())
    for i in range(1000):  # other searches' trials: read and checked like any other
        key = trial_key(space.space_id, "0-0-0", "elsewhere", i)
        shutil.copytree(src, results / "trials" / key)
    t0 = time.perf_counter()
    report = audit(results)
    assert time.perf_counter() - t0 < 10
    assert report.checked["trials"] >= 1000 and report.count("error") == 1000  # misnamed copies


def test_every_file_a_trial_wrote_is_listed_with_its_sha256(results):
    """metrics.json lists the sha256 of the inputs and log the trial wrote before it,
    finished.json that of metrics.json itself."""
    for d in (results / "trials").iterdir():
        m = json.loads((d / "metrics.json").read_text())
        assert set(m["artifacts"]) == {"trial.json", "log.txt"}
        listed = {**m["artifacts"], **json.loads((d / "finished.json").read_text())["artifacts"]}
        assert listed == {n: hashlib.sha256((d / n).read_bytes()).hexdigest() for n in listed}


def trained_like(results: Path, key: str) -> Path:
    """Trial ``key`` recorded again the way a trained trial records itself: the same inputs and
    accuracy, and weights (model.pt) written by the run, so its record lists their sha256."""
    from layernas.store.records import record_run, write_finished_record

    d = results / "trials" / key
    inputs = json.loads((d / "trial.json").read_text())
    old = json.loads((d / "metrics.json").read_text())
    shutil.rmtree(d)

    def body(metrics: dict, log) -> None:
        (d / "model.pt").write_bytes(bytes(range(256)) * 64)
        metrics["accuracy"] = old["accuracy"]

    m = record_run(d, inputs, {"key": key, "arch": old["arch"], "device": "none"}, body, torch=False)
    write_finished_record(d, key, old["arch"], m)
    assert "model.pt" in m["artifacts"]
    return d


def test_a_flipped_byte_in_a_weights_file_is_a_checksum_error(results, capsys):
    key = table_key(results)
    weights = trained_like(results, key) / "model.pt"
    assert problems(results, capsys=capsys)[1]["clean"]
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0x01
    weights.write_bytes(bytes(data))
    rc, report = problems(results, capsys=capsys)
    p = only(report)
    assert rc == 1 and (p["kind"], p["path"], p["fixable"]) == ("checksum", str(weights.parent), True)
    assert "model.pt" in p["message"]
    rc, report = problems(results, "--fix", capsys=capsys)
    assert report["removed"] == [str(weights.parent)] and not weights.parent.exists()


def test_an_edited_metrics_json_is_a_checksum_error(results, capsys):
    key = table_key(results)
    metrics = results / "trials" / key / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"device": "none"', '"device": "cpu"'))
    rc, report = problems(results, capsys=capsys)
    p = only(report)
    assert rc == 1 and p["kind"] == "checksum" and "metrics.json" in p["message"]


# --------------------------------------------------------------------------- weights and disk


def fake_weights(results: Path) -> dict[str, Path]:
    """model.pt in every trial (tabular trials have none): 1,000 bytes each."""
    out = {}
    for key in trial_keys(results):
        p = results / "trials" / key / "model.pt"
        p.write_bytes(b"w" * 1000)
        out[key] = p
    return out


def selectable(results: Path) -> set[str]:
    search = results / "search"
    keys = set(pd.read_parquet(search / "tables.parquet")["key"]) | set(pd.read_parquet(search / "top.parquet")["key"])
    return keys


def test_clean_weights_removes_only_unselectable_weights(results, capsys):
    weights = fake_weights(results)
    top = pd.read_parquet(results / "search" / "top.parquet").iloc[0]
    final = results / "final" / top["final_key"]
    final.mkdir(parents=True)
    (final / "metrics.json").write_text(json.dumps({"status": "ok", "arch": top["arch"]}))
    final_weights = final / "model.pt"
    final_weights.write_bytes(b"f" * 10)
    keep = selectable(results)
    assert 0 < len(keep) < len(weights)
    assert main(["clean-weights", str(results), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    gone = {k for k, p in weights.items() if not p.exists()}
    assert gone == set(weights) - keep
    assert out["bytes_freed"] == 1000 * len(gone) and len(out["removed"]) == len(gone) and out["kept"] == len(keep)
    assert final_weights.exists()
    assert all((results / "trials" / k / "metrics.json").exists() for k in weights)
    capsys.readouterr()
    rc, report = problems(results, capsys=capsys)
    assert report["errors"] == 0  # the search is as valid as before


def test_clean_weights_dry_run_removes_nothing(results, capsys):
    weights = fake_weights(results)
    assert main(["clean-weights", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert all(p.exists() for p in weights.values())
    assert f"would remove {len(weights) - len(selectable(results))} weights files" in out


def test_clean_weights_refuses_when_a_table_is_unreadable(results, capsys):
    weights = fake_weights(results)
    (results / "search" / "r0" / "l1" / "buckets.parquet").write_bytes(b"junk")
    assert main(["clean-weights", str(results)]) == 2
    assert "layernas audit" in capsys.readouterr().err
    assert all(p.exists() for p in weights.values())


def test_disk_usage_splits_bytes_by_area(results):
    before = disk_usage(results)
    fake_weights(results)
    after = disk_usage(results)
    n = len(trial_keys(results))
    assert after["trials_weights"] - before["trials_weights"] == 1000 * n
    assert after["trials_other"] == before["trials_other"] > 0 and after["search"] == before["search"] > 0
    assert after["total"] == sum(v for k, v in after.items() if k != "total")
    assert disk_usage(results.parent / "nothing-here")["total"] == 0


# --------------------------------------------------------------------------- a shared trial store


@pytest.fixture(scope="module")
def two_searches(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(store, results a, results b): the .test search and one with a 30% lower target, one store."""
    tmp = tmp_path_factory.mktemp("two")
    store = tmp / "store"
    snakemake(tmp / "a", overrides={"trials": str(store)})
    snakemake(tmp / "b", overrides={"trials": str(store), "target": {"min": 8 * 0.7, "max": 9 * 0.7}})
    return store, tmp / "a" / "results", tmp / "b" / "results"


def searched(results: Path) -> set[str]:  # the trial keys a search's children tables ask for
    kids = pd.concat([pd.read_parquet(p) for p in (results / "search").glob("r*/l*/children.parquet")])
    return set(kids.loc[kids["action"] == "evaluate", "key"])


def test_shared_store_audit_and_maintenance_touch_only_this_searchs_trials(two_searches, capsys):
    store, a, b = two_searches
    mine, theirs = searched(a), searched(b)
    assert mine - theirs and theirs - mine and set(p.name for p in store.iterdir()) == mine | theirs
    for results, keys in ((a, mine), (b, theirs)):  # the other search's trials are no orphans here
        rc, report = problems(results, capsys=capsys)
        assert rc == 0 and report["problems"] == [] and report["checked"]["trials"] == len(keys)
        st = collect_status(results)
        assert st["trials"] == {"ok": len(keys), "failed": 0, "pending": 0} and st["trials_store"] == str(store)
        assert st["disk"]["trials_store"] == str(store)
        assert st["disk"]["trials_other"] == sum(f.stat().st_size for k in keys for f in (store / k).iterdir())

    running = store / "feedfacefeedface"  # another search's trial, being evaluated now
    running.mkdir()
    other = sorted(theirs - mine)[0]
    metrics = store / other / "metrics.json"
    good = metrics.read_text()
    metrics.write_text(good[:20])  # broken, but only the other search may decide about it
    rc, report = problems(a, "--fix", capsys=capsys)
    assert rc == 0 and report["problems"] == [] and report["removed"] == []
    assert running.is_dir() and metrics.read_text() == good[:20]
    rc, report = problems(b, capsys=capsys)
    assert rc == 1 and [(p["kind"], p["path"]) for p in report["problems"]] == [("corrupt", str(store / other))]
    metrics.write_text(good)

    weights = [store / k / "model.pt" for k in (sorted(mine - theirs)[0], other)]  # not selectable by a
    for w in weights:
        w.write_bytes(b"w" * 1000)
    assert main(["clean-weights", str(a)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layernas: error:") and "shared trial store" in err and "its own trial store" in err
    assert all(w.exists() for w in weights)


def _fail(trial: Path) -> None:
    """Record a finished trial as failed (a lookup service that was down), as the job would
    (finished.json lists the sha256 of the metrics.json written)."""
    from layernas.store.records import sha256_file

    for name in ("metrics.json", "finished.json"):
        rec = json.loads((trial / name).read_text())
        m = rec.get("metrics", rec)
        m.update(status="failed", error="RuntimeError: oracle service down", accuracy=None)
        if name == "finished.json":
            rec["artifacts"] = {"metrics.json": sha256_file(trial / "metrics.json")}
        (trial / name).write_text(json.dumps(rec))


def test_retry_failed_on_a_shared_store_moves_only_this_searchs_trials(two_searches, capsys):
    """retry-failed, then the same snakemake command: only this search's failed trial is set aside
    (into its results directory's failed/) and evaluated again; the other search's stays."""
    store, a, b = two_searches
    mine, other = sorted(searched(a) - searched(b))[0], sorted(searched(b) - searched(a))[0]
    for key in (mine, other):
        _fail(store / key)
    tables = {p: pd.read_parquet(p) for p in (a / "search").glob("r*/l*/buckets.parquet")}
    capsys.readouterr()
    assert main(["retry-failed", str(a), "--json"]) == 0
    moved = json.loads(capsys.readouterr().out)["moved"]
    assert [(m["key"], m["moved_to"]) for m in moved] == [(mine, str(a / "failed" / f"{mine}.0"))]
    assert not (store / mine).exists() and (a / "failed" / f"{mine}.0" / "metrics.json").exists()
    snakemake(a.parent, overrides={"trials": str(store)})
    assert json.loads((store / mine / "metrics.json").read_text())["status"] == "ok"
    assert json.loads((store / other / "metrics.json").read_text())["status"] == "failed"
    for p, df in tables.items():
        pd.testing.assert_frame_equal(pd.read_parquet(p), df, obj=str(p))
