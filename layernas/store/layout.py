"""The results layout: the one place that decides where every file of a search lives.

Writers (rule scripts, ``layernas search --out``), readers (status, audit, report) and the
Snakemake rules (their output patterns) all ask this module, so moving a file is a one-line
change here. Every method takes ``int | str`` for the sweep ``r``, layer ``l`` and ``key``,
so the same call gives a concrete path (``children(0, 3)``) or a Snakemake pattern
(``children("{r}", "{l}")``).

    R/search/search.json                    what decides the search (status/audit read it)
    R/search/r{r}/l{l}/children.parquet     checkpoint: children of stage (r, l) + action
    R/search/r{r}/l{l}/buckets.parquet      table(r, l): the memorial table M_l after (r, l)
    R/search/r{r}/l{l}/history.parquet      every child generated up to and including (r, l)
    R/search/r{r}/l{l}/batch{c}.{v}.json    manifest of the stage's trial batch c (run v): what it did
    R/search/{summary.json, history.parquet, tables.parquet, top.parquet}   after the search
    R/trials/{key}/{trial.json, log.txt, metrics.json, finished.json, model.pt}   (or STORE/{key}/...)
    R/final/{key}/{trial.json, log.txt, model.pt, preprocessing.json, metrics.json}
    R/export/{key}/{model.pt (TorchScript), model.onnx, model.json (the card)}
    R/transfer/{key}/...   R/transfer/data/   R/failed/{key}.{n}/
    R/latency/table.parquet                 the measured latency table (target.metric latency)
    R/supernet/{skey}/{supernet.pt, log.txt, metrics.json, finished.json}   evaluator supernet
    R/logs/{kind}/{name}.log   R/benchmarks/{kind}/{name}.tsv   R/report/

The trial records may live outside the results directory, in a **trial store** (the config's
``trials:``) that several results directories and several users' searches share: trials are
named by content, so a key found in the store is the same trial whoever asked for it. The
workflow records the store in ``search.json`` (``trials``: its absolute path, or null for the
default ``R/trials``); readers that know only the results directory use ``Layout.of_results``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# File names inside one record directory (a trial, a final retraining, a transfer).
INPUTS = "trial.json"      # what was asked: space, arch, recipe, seed
METRICS = "metrics.json"   # written last and atomically: its presence means "finished"
LOG = "log.txt"
RECORD = "finished.json"   # second copy of metrics.json that Snakemake does not delete on a rerun
WEIGHTS = "model.pt"
PREPROCESSING = "preprocessing.json"  # a final model's input spec: size, channels, mean/std, space, arch
DETECTIONS = "detections.json"
LOCK = ".lock"             # flock-held by the job evaluating a trial: a second job for the key waits
SUPERNET = "supernet.pt"   # the trained supernet (evaluator supernet), in supernet/{skey}/
RECORD_FILES = (INPUTS, METRICS, LOG)

# Files of an exported model (`layernas export`, rule export): the card is written last.
EXPORT_TORCHSCRIPT = "model.pt"
EXPORT_ONNX = "model.onnx"
EXPORT_CARD = "model.json"

# Areas holding one directory per content key.
KEYED_AREAS = ("trials", "final", "transfer")

STAGE_DIR = re.compile(r"r(\d+)/l(\d+)")

Part = int | str


class Layout:
    """Paths of one results directory (``results:`` in the config), and of the trial store it
    uses (``trials_dir``; default ``root/trials``). Relative paths are relative to the working
    directory, as everywhere else."""

    def __init__(self, root: str | Path = "results", search_dir: str | Path | None = None,
                 trials_dir: str | Path | None = None):
        self.root = Path(root)
        # `layernas search --out DIR` writes only the search part, with DIR as its search dir.
        self._search = Path(search_dir) if search_dir is not None else self.root / "search"
        self._trials = Path(trials_dir) if trials_dir is not None else self.root / "trials"

    @classmethod
    def of_results(cls, results: str | Path) -> Layout:
        """The layout of an existing results directory, with the trial store its run recorded in
        ``search/search.json`` (``trials``). The default store ``results/trials`` when the run
        recorded none, or when search.json is missing or unreadable (the audit reports that)."""
        layout = cls(results)
        try:
            meta = json.loads(layout.search_meta.read_text())
        except (OSError, ValueError):
            return layout
        store = meta.get("trials") if isinstance(meta, dict) else None
        return cls(results, trials_dir=store) if isinstance(store, str) and store else layout

    def __repr__(self) -> str:
        if self.shared_store:
            return f"Layout({str(self.root)!r}, trials_dir={str(self._trials)!r})"
        return f"Layout({str(self.root)!r})"

    @property
    def trials_dir(self) -> Path:
        """The trial store: one directory per trial key."""
        return self._trials

    @property
    def shared_store(self) -> bool:
        """Whether the trials live outside this results directory (``trials:`` in the config),
        where other searches may read and write them too."""
        return self._trials != self.root / "trials"

    # search stages
    @property
    def search_dir(self) -> Path:
        return self._search

    def stage_dir(self, r: Part, l: Part) -> Path:
        return self.search_dir / f"r{r}" / f"l{l}"

    def children(self, r: Part, l: Part) -> Path:
        return self.stage_dir(r, l) / "children.parquet"

    def buckets(self, r: Part, l: Part) -> Path:
        return self.stage_dir(r, l) / "buckets.parquet"

    def history(self, r: Part, l: Part) -> Path:
        return self.stage_dir(r, l) / "history.parquet"

    def batch(self, r: Part, l: Part, c: Part, v: Part) -> Path:
        """Manifest of trial batch ``c`` of stage (r, l), run ``v`` (0; a later run redoes the
        batch's trials deleted since, e.g. by ``audit --fix`` or ``retry-failed``): the rule
        output that stands for the batch's trial records, which live in the trial store."""
        return self.stage_dir(r, l) / f"batch{c}.{v}.json"

    def stage_files(self, pattern: str = "*.parquet") -> list[Path]:
        """Every stage file matching ``pattern`` (e.g. "children.parquet"), sorted."""
        return sorted(self.search_dir.glob(f"r*/l*/{pattern}"))

    # after the search
    @property
    def search_meta(self) -> Path:
        return self.search_dir / "search.json"

    @property
    def summary(self) -> Path:
        return self.search_dir / "summary.json"

    @property
    def full_history(self) -> Path:
        return self.search_dir / "history.parquet"

    @property
    def tables(self) -> Path:
        return self.search_dir / "tables.parquet"

    @property
    def top(self) -> Path:
        return self.search_dir / "top.parquet"

    # keyed records
    def area(self, name: str) -> Path:
        if name not in KEYED_AREAS:
            raise ValueError(f"area: must be one of {', '.join(KEYED_AREAS)}, got {name!r}")
        return self._trials if name == "trials" else self.root / name

    def trial_dir(self, key: Part) -> Path:
        return self._trials / str(key)

    def trial_metrics(self, key: Part) -> Path:
        return self.trial_dir(key) / METRICS

    def final_dir(self, key: Part) -> Path:
        return self.root / "final" / str(key)

    def final_metrics(self, key: Part) -> Path:
        return self.final_dir(key) / METRICS

    def final_weights(self, key: Part) -> Path:
        return self.final_dir(key) / WEIGHTS

    def final_preprocessing(self, key: Part) -> Path:
        return self.final_dir(key) / PREPROCESSING

    def export_dir(self, key: Part) -> Path:
        """Where the workflow exports a final model (TorchScript, ONNX, the card)."""
        return self.root / "export" / str(key)

    def export_card(self, key: Part) -> Path:
        return self.export_dir(key) / EXPORT_CARD

    def transfer_dir(self, key: Part) -> Path:
        return self.root / "transfer" / str(key)

    def transfer_metrics(self, key: Part) -> Path:
        return self.transfer_dir(key) / METRICS

    @property
    def transfer_data(self) -> Path:
        return self.root / "transfer" / "data"

    @property
    def latency_table(self) -> Path:
        """The latency table the workflow measures when ``latency.table`` is not given."""
        return self.root / "latency" / "table.parquet"

    # the weight-sharing supernet (evaluator supernet): one directory per supernet key
    @property
    def supernet_root(self) -> Path:
        return self.root / "supernet"

    def supernet_dir(self, skey: Part) -> Path:
        return self.supernet_root / str(skey)

    def supernet_checkpoint(self, skey: Part) -> Path:
        return self.supernet_dir(skey) / SUPERNET

    def supernet_metrics(self, skey: Part) -> Path:
        """Written last by the supernet job: its presence means the supernet is trained."""
        return self.supernet_dir(skey) / METRICS

    def failed_dir(self, key: str, n: int) -> Path:
        return self.root / "failed" / f"{key}.{n}"

    # logs, benchmarks, report
    def log(self, kind: str, name: str | None = None) -> Path:
        """``logs/{kind}/{name}.log``, or ``logs/{kind}.log`` for a one-off job."""
        return self.root / "logs" / (f"{kind}.log" if name is None else f"{kind}/{name}.log")

    def stage_log(self, kind: str, r: Part, l: Part) -> Path:
        return self.root / "logs" / kind / f"r{r}_l{l}.log"

    def benchmark(self, kind: str, name: str) -> Path:
        return self.root / "benchmarks" / kind / f"{name}.tsv"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def report(self, name: str) -> Path:
        return self.report_dir / name

    # what a person follows: one line per stage start/end, and the state of the last run
    @property
    def progress_log(self) -> Path:
        return self.root / "logs" / "progress.log"

    @property
    def run_state(self) -> Path:
        return self.root / "logs" / "run.json"
