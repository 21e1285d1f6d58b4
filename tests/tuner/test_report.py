"""`tuner report` and `tuner compare`, read back from real runs' MLflow store alone."""

from __future__ import annotations

import base64
import re
import struct
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import Store, tuner_run
from tuner.commands.cli import main
from tuner.core.errors import UsageError
from tuner.reading.report import _front_table, write_report
from tuner.reading.summary import FRONT_SHOWN
from tuner.tracking.records import TrialRecord, latest_parent, trials_of
from tuner.tracking.tags import PARENT_ROLE, Status, Tag

CLASSICAL = """\
name: digits_report_knn
trainable: classical
cache_dir: CACHE_DIR
data: {dataset: digits, seed: 0}
search: {algorithm: optuna, num_samples: 2, max_concurrent: 2, seed: 0}
scheduler: {type: fifo}
resources: {cpu: 1}
space:
  features: {name: tiny_image, size: 8, norm: {choice: [none, l2]}}
  classifier: {name: knn, k: {int: [1, 5]}}
"""
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMAGE = re.compile(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
FIGURE = re.compile(r'<figure id="([a-z_]+)"><img [^>]*src="data:image/png;base64,([^"]+)"')
PAGE_PX = 1200  # the report's max-width


@pytest.fixture(scope="module")
def store(digits_search) -> Store:
    """Two finished experiments in one store: the shared deep search, and a classical one."""
    knn = CLASSICAL.replace("CACHE_DIR", str(digits_search.tmp / "features"))  # not ~/.cache
    tuner_run(digits_search, knn)
    return digits_search


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_report_is_one_self_contained_html_file(store, capsys):
    out = store.tmp / "out"
    assert main(["report", "digits_search", "--out", str(out), "--tracking-uri", store.uri]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == store.tmp / "out" / "digits_search.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # Nothing to fetch: no scripts, no remote stylesheets, images or fonts.
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    images = IMAGE.findall(page)
    assert len(images) == 7  # confusion matrix, learning curves, anytime curve, 4 Optuna plots
    assert '<figure id="anytime">' in page
    for data in images:
        assert base64.b64decode(data).startswith(PNG_MAGIC)
    assert 'href="data:text/csv;base64,' in page


def test_report_shows_spec_trials_metrics_and_statuses(store):
    page = write_report(store.uri, "digits_search", store.tmp / "out").read_text()
    text = _text(page)
    parent = latest_parent(store.client, "digits_search")
    trials = trials_of(store.client, parent)
    assert parent.info.run_id in text
    assert "loguniform: [1e-2, 1e-1]" in text  # the spec, verbatim
    for trial in trials:  # the top-k table holds all three
        assert trial.trial_id in text
    assert f"test_acc {parent.data.metrics['test_acc']:.4f}" in text
    assert f"test_f1 {parent.data.metrics['test_f1']:.4f}" in text
    counts = dict(re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">(\d+)</td></tr>", page))
    assert counts["total"] == "3"
    stopped = "stopped early (by ASHA or the time budget)"
    labels = ("completed", stopped, "diverged (NaN/inf loss)", "errored")
    assert sum(int(counts[label]) for label in labels) == 3
    assert int(counts["completed"]) == sum(t.status == Status.COMPLETED for t in trials)
    assert "optimizer.name" in text and "best val_acc" in text


def test_report_fits_the_width_of_its_page(store):
    """Tables as wide as a search's parameters scroll inside the page, not the page itself;
    the plots of many parameters are drawn no wider than the page (so never shrunk)."""
    page = write_report(store.uri, "digits_search", store.tmp / "out").read_text()
    assert ".scroll { overflow-x: auto;" in page
    assert page.count("<table>") == page.count('<div class="scroll"><table>') >= 4
    figures = dict(FIGURE.findall(page))
    for name in ("optuna_parallel_coordinate", "optuna_slice"):
        png = base64.b64decode(figures[name])
        width, height = struct.unpack(">II", png[16:24])  # the PNG's IHDR chunk
        assert 400 < width <= PAGE_PX and height < width, (name, width, height)


def test_report_needs_only_the_mlflow_store(store, tmp_path, monkeypatch):
    """No Ray storage, no spec file, another working directory: the store is enough."""
    hidden = tmp_path / "hidden"  # moved away for this test only: other tests share the store
    hidden.mkdir()
    moved = [store.storage, *store.tmp.glob("*.yaml")]
    for original in moved:
        original.rename(hidden / original.name)
    monkeypatch.chdir(tmp_path)
    try:
        path = write_report(store.uri, "digits_search", "elsewhere")
    finally:
        for original in moved:
            (hidden / original.name).rename(original)
    assert path == Path("elsewhere/digits_search.html")
    page = path.read_text()
    assert len(IMAGE.findall(page)) == 7
    assert "simple_cnn" in page


def test_report_of_a_classical_run(store):
    """A classical run has its confusion matrix and search plots, but no learning curves (its
    trials report once): the report shows what there is, with its tables and spec."""
    page = write_report(store.uri, "digits_report_knn", store.tmp / "out").read_text()
    assert 1 <= len(IMAGE.findall(page)) < 7
    assert "tiny_image" in page and "test_acc" in page


def test_report_of_an_unknown_experiment_says_so(store):
    with pytest.raises(UsageError, match="no experiment named 'nope'"):
        write_report(store.uri, "nope", store.tmp / "out")


def test_compare_puts_both_experiments_side_by_side(store, capsys):
    assert main(["compare", "digits_search", "digits_report_knn", "--tracking-uri", store.uri]) == 0
    table = capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0].split() == ["digits_search", "digits_report_knn"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip()}
    deep_run = latest_parent(store.client, "digits_search")
    knn_run = latest_parent(store.client, "digits_report_knn")
    assert rows["run"] == [deep_run.info.run_id, knn_run.info.run_id]
    assert rows["trials"] == ["3", "2"]
    assert rows["optimizer.name"][0] in {"sgd", "adam"} and rows["optimizer.name"][1] == "-"
    assert rows["classifier.name"] == ["-", "knn"]
    assert rows["test_acc"] == [
        f"{deep_run.data.metrics['test_acc']:.4f}",
        f"{knn_run.data.metrics['test_acc']:.4f}",
    ]
    assert "best_val_acc" in rows and "test_f1" in rows


def test_a_long_pareto_front_shows_its_first_rows_and_points_to_the_csv(tmp_path):
    """A front of 60 among 1,000 trials: the report's table holds the first FRONT_SHOWN."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("big", artifact_location=str(tmp_path / "artifacts"))
    tags = {Tag.ROLE: PARENT_ROLE, Tag.METRIC: "val_acc", Tag.MODE: "max"}
    tags[Tag.OBJECTIVES] = "val_acc:max,model_params:min"
    parent = client.get_run(client.create_run(experiment, tags=tags).info.run_id)
    trials = [
        TrialRecord(
            f"t{i:04d}",
            f"r{i}",
            Status.COMPLETED,
            1 - i / 1000,
            3,
            {"lr": "0.1"},
            i == 0,
            {"model_params": 1000.0 - i},
            pareto=i < 60,
        )
        for i in range(1000)
    ]
    table = _front_table(parent, trials)
    assert "Pareto front (60 of 1,000 trials)" in table
    assert table.count("<tr") == 1 + FRONT_SHOWN  # the head, then the first rows
    assert f"and {60 - FRONT_SHOWN} more: the CSV's <code>pareto</code> column marks" in table
    assert "more:" not in _front_table(parent, trials[:FRONT_SHOWN])  # a short front: all of it
