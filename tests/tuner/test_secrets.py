"""Credentials stay out of everything tuner records or prints: tags, the spec artifact, the
HTML report, the closing summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.core.secrets import mask_secrets
from tuner.reading.report import write_report
from tuner.reading.summary import Summary, print_summary
from tuner.tracking.experiment import Experiment
from tuner.tracking.tags import SearchTags, Tag
from tuner.trainables.size import ModelSize

SECRET = "s3cr3t-Pa55"
URI = f"https://alice:{SECRET}@mlflow.example.com"
MASKED_URI = "https://alice:***@mlflow.example.com"
SPEC = f"name: leaky\ntracking:\n  uri: {URI}\ndata:\n  dataset: digits\n  api_key: {SECRET}\n"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (URI, MASKED_URI),
        (f"https://{SECRET}@github.com/x.git", "https://***@github.com/x.git"),
        (f"postgresql://bob:{SECRET}@db:5432/mlflow", "postgresql://bob:***@db:5432/mlflow"),
        (f"tracking.uri={URI}", f"tracking.uri={MASKED_URI}"),
        (f"data.options.api_key={SECRET}", "data.options.api_key=***"),
        (f"  token: {SECRET}  # ci", "  token: ***"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),  # nothing secret: left as it is
        ("file:///runs/a@b", "file:///runs/a@b"),  # an @ in a path is not userinfo
        ("auth:\n  user: x", "auth:\n  user: x"),  # a mapping's key, no value on its line
    ],
)
def test_mask_secrets(text, masked):
    assert mask_secrets(text) == masked


def _started(tmp_path: Path, overrides: list[str]) -> tuple[Experiment, Path]:
    """A parent run started on a fresh sqlite store, as `tuner run` starts it."""
    spec_path = tmp_path / "leaky.yaml"
    spec_path.write_text(SPEC)
    experiment = Experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "leaky")
    experiment.start(spec_path, SearchTags(overrides=tuple(overrides)))
    return experiment, spec_path


def test_tags_and_spec_artifact_are_masked(tmp_path):
    experiment, _ = _started(tmp_path, [f"tracking.uri={URI}", f"x.token={SECRET}"])
    run = experiment.client.get_run(experiment.parent_id)
    assert json.loads(run.data.tags[Tag.OVERRIDES]) == [
        f"tracking.uri={MASKED_URI}",
        "x.token=***",
    ]
    assert not any(SECRET in value for value in run.data.tags.values())
    local = experiment.client.download_artifacts(experiment.parent_id, "spec", str(tmp_path))
    logged = (Path(local) / "leaky.yaml").read_text()  # same path as the file's own name
    assert SECRET not in logged
    assert f"uri: {MASKED_URI}" in logged and "api_key: ***" in logged


def test_report_masks_a_spec_logged_unmasked(tmp_path):
    """Runs recorded before masking keep their spec as written: the report masks it."""
    experiment, _ = _started(tmp_path, [])
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "leaky.yaml").write_text(SPEC)
    experiment.client.log_artifact(experiment.parent_id, str(raw / "leaky.yaml"), "spec")
    page = write_report(experiment.tracking_uri, "leaky", tmp_path / "out").read_text()
    assert SECRET not in page
    assert MASKED_URI in page


def test_summary_prints_the_tracking_uri_masked(capsys):
    summary = Summary(
        experiment="leaky",
        tracking_uri=URI,
        artifacts=f"{URI}/mlartifacts/leaky",
        parent_run_id="abc",
        storage="/tmp/tuner_results/leaky",
        metric="val_acc",
        best_trial_id="t1",
        test_metrics={"test_acc": 0.9},
        model_size=ModelSize(params=10, mb=0.01),
        retrained=False,
        model_uri="models:/leaky/1",
        trials=[],
        sampled=[],
    )
    print_summary(summary)
    out = capsys.readouterr().out
    assert SECRET not in out
    assert out.count(MASKED_URI) == 5  # the store, artifacts, browse, best and predict lines
