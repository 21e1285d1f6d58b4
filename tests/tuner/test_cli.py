"""The reading commands (`tuner best`, `compare`, `--help`) start fast: they import neither Ray nor
torch (about 8 s of a cold start), only MLflow, to read a real store."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tuner.test_recorder import record_search
from tuner.commands import cli
from tuner.commands.cli import main
from tuner.tracking.tags import TRUE, Tag

ROOT = Path(__file__).resolve().parents[2]
# Run in a fresh interpreter: this test process has imported Ray and torch already.
READ = """
import contextlib, json, sys
from tuner.commands.cli import main
uri = sys.argv[1]
codes = [
    main(["best", "rec", "--tracking-uri", uri]),
    main(["best", "rec", "--json", "--tracking-uri", uri]),
    main(["compare", "rec", "rec", "--tracking-uri", uri]),
]
with contextlib.suppress(SystemExit):
    main(["--help"])
heavy = sorted({name.split(".")[0] for name in sys.modules} & {"ray", "torch", "optuna"})
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


@pytest.mark.slow
def test_best_and_compare_read_mlflow_without_importing_ray_or_torch(tmp_path):
    experiment, _ = record_search(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", READ, experiment.tracking_uri],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"codes": [0, 0, 0], "heavy": []}, done.stderr
    assert "t1" in done.stdout and "t2" in done.stdout  # the trials were read from the store


def test_best_json_gives_numbers_and_ties_rank_the_chosen_best_first(tmp_path, capsys):
    experiment, _ = record_search(tmp_path)
    client = experiment.client
    runs = {run.data.tags[Tag.TRIAL_ID]: run for run in experiment.children()}
    client.log_metric(runs["t2"].info.run_id, "final_val_acc", 0.9, step=9)  # t1 and t2 tie
    client.log_metric(runs["t1"].info.run_id, "final_val_acc", 0.9, step=9)
    client.set_tag(runs["t2"].info.run_id, Tag.BEST, TRUE)  # the search chose t2
    capsys.readouterr()
    assert main(["best", "rec", "--json", "--tracking-uri", experiment.tracking_uri]) == 0
    trials = json.loads(capsys.readouterr().out)["trials"]
    assert [(t["trial_id"], t["best"]) for t in trials] == [("t2", True), ("t1", False)]
    assert trials[0]["params"] == {"model.width": 32}  # a number, as the trial got it
    assert main(["best", "rec", "--tracking-uri", experiment.tracking_uri]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "(* = the trial chosen as best)" in table[0]
    assert table[3].split()[:2] == ["1", "t2"] and "early_stopped *" in table[3]


def test_reading_commands_never_create_a_store(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for command in (["best", "x"], ["report", "x"], ["compare", "x", "y"], ["resume", "x"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tuner: error: no MLflow store at {tmp_path / 'mlflow.db'} "), err
    assert list(tmp_path.iterdir()) == []


def test_usage_errors_name_the_command_once(capsys):
    assert main(["best", "x", "--top", "0"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "tuner: error: best: argument --top: must be a positive integer, got '0' (see --help)\n"
    )
    assert main(["nope"]) == 2
    assert capsys.readouterr().err.startswith("tuner: error: argument command: invalid choice")


@pytest.mark.slow
def test_a_closed_pipe_ends_listing_quietly():
    done = subprocess.run(
        f"{sys.executable} -m tuner list models | head -1",
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.count("\n") == 1
    assert done.stderr == ""


def test_a_tracking_server_that_does_not_answer_stops_a_run_before_anything_starts(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as probe:  # a free port: nothing listens on it once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = ROOT / "search_spaces" / "digits.yaml"
    assert main(["run", str(spec), "--tracking-uri", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"tuner: error: no MLflow tracking server answers at http://127.0.0.1:{port} "
        "(ConnectionError); start it, or point --tracking-uri (or MLFLOW_TRACKING_URI) at a "
        "running one\n"
    )
    assert list(tmp_path.iterdir()) == []  # no tuner_results, no mlflow.db
    assert main(["best", "digits", "--tracking-uri", "htp://x"]) == 2
    assert "can't use the MLflow store htp://x: " in capsys.readouterr().err


# As outside pytest, where Python hides the DeprecationWarning that MLflow's store raises
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_store_that_cannot_be_made_stops_a_run_with_one_line(
    ray_session, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").write_text("a file where the store's folder would be")
    uri = f"sqlite:///{tmp_path}/notes/mlflow.db"  # MLflow would make the folder: a file is there
    assert main(["run", str(ROOT / "search_spaces" / "digits.yaml"), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tuner: error: can't use the MLflow store {uri}: [Errno 17] File ")
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]  # no tuner_results


def test_warnings_print_as_one_line_without_pythons_source_line(capsys):
    cli._show_warning(UserWarning("tuner: skipped the anytime plot: x"), UserWarning, "/a.py", 3)
    cli._show_warning(DeprecationWarning("old"), DeprecationWarning, "/b.py", 9, None, "src()")
    err = capsys.readouterr().err
    assert err == "tuner: skipped the anytime plot: x\nDeprecationWarning: old\n"
