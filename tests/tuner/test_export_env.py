"""A registered model serves outside tuner's environment (issues 12 and 16).

For each kind of model tuner exports (a deep network in PyTorch's pt2 format, a classical
bag-of-SIFT + kNN pipeline with mlflow.sklearn, each inside tuner's ``ImageClassifier``), a
fresh ``python`` loads the registered version by ``models:/NAME/VERSION`` and classifies real
digits; and ``mlflow models serve`` answers real digits sent over HTTP with class names. The
fresh ``python`` cannot import tuner, its ``models`` and ``data`` packages, nor any package
the model's requirements don't install (listed, or a dependency of one listed: pip brings those
too; mlflow is always listed). Then:

- every package the load and the prediction imported is one the requirements install, and
  tuner's code, where the model needs it, came with the model (MLflow's ``code_paths``, and
  ``models/serving.py`` as the model's own code);
- tuner's feature cache is left as it was, and an empty HOME (XDG_CACHE_HOME, TORCH_HOME
  inside it) and working folder stay empty: a model loaded for serving computes its features
  and writes nothing. TMPDIR is not checked: MLflow downloads the model there to load it, a
  copy of the model, not a cache.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pickle
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from packaging.requirements import Requirement
from sklearn.pipeline import Pipeline

import data
import models
from data.augment import channel_stats
from models.classical import build_pipeline
from models.raw_image import RawImageClassifier
from tests.processes import free_port, stop_group, wait_until_answers
from tuner.publishing import export

REPO = Path(__file__).resolve().parents[2]
SOURCES = tuple(REPO / package for package in ("tuner", "models", "data"))  # tuner's checkout

# Run by a fresh ``python -I`` (no PYTHONPATH, no current directory on sys.path) in an empty
# directory: argv is the model's URI, a JSON list of the distributions its requirements install,
# the images (.npy) and where to write the report (JSON).
SERVE = r"""
import importlib.machinery, importlib.metadata, importlib.util, json, re, sys

model_uri, installed_path, images_path, report_path = sys.argv[1:]

# Forget tuner's editable install: a serving machine has only what the model brings.
def editable(hook):
    return getattr(hook, "__module__", "").startswith("__editable__")

sys.meta_path[:] = [finder for finder in sys.meta_path if not editable(finder)]
sys.path_hooks[:] = [hook for hook in sys.path_hooks if not editable(hook)]
sys.path_importer_cache.clear()
hidden = [name for name in ("tuner", "models", "data") if importlib.util.find_spec(name)]
assert not hidden, f"importable before the load: {hidden}"

# Nor any package its requirements don't install: an import tried only if the package is there
# (sklearn tries pytest, mako pygments) then fails as it would on that machine, and a hard one
# fails loudly. (tuner's own top-level names are hidden above, not here: the model ships
# ``models`` under the same name.) Such a package is found, as a spec without origin, and fails
# to load: answering None would let the next finder find it, and torch._dynamo asks find_spec
# about optional packages, taking a spec without origin as nothing to skip.
def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()

with open(installed_path) as file:
    installed = set(json.load(file)) | {"tuner"}
owners = importlib.metadata.packages_distributions()
absent = {top for top, dists in owners.items() if not {canonical(d) for d in dists} & installed}

class NotInstalled:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in absent:
            return importlib.machinery.ModuleSpec(name, NotInstalled)
        return None

    @staticmethod
    def create_module(spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (not required)", name=spec.name)

    @staticmethod
    def exec_module(module):  # never reached: create_module refuses
        pass

sys.meta_path.insert(0, NotInstalled)

import mlflow.pyfunc
import numpy as np

images = np.load(images_path)
# The registry client first: what reaching this store imports (sqlite: SQLAlchemy, alembic) is
# MLflow's business, not the model's.
_, name, version = model_uri.split("/")
mlflow.MlflowClient().get_model_version(name, version)
before, path_before = set(sys.modules), list(sys.path)
model = mlflow.pyfunc.load_model(model_uri)
answer = model.predict(images)  # uint8, as the signature says
predictions = np.stack(answer["probabilities"])
labels = list(answer["label"])

code = [entry for entry in sys.path if entry not in path_before]  # the model's code_paths
tops = {name.partition(".")[0] for name in set(sys.modules) - before}
tops -= set(sys.stdlib_module_names) | set(sys.builtin_module_names)
files = {top: getattr(sys.modules[top], "__file__", None) for top in tops}
shipped = {top for top, file in files.items() if file and file.startswith(tuple(code))}
report = {
    "predictions": predictions.tolist(),
    "labels": labels,
    "shipped": {top: files[top] for top in shipped},
    "distributions": sorted({d for top in tops - shipped for d in owners.get(top, [])}),
    "unowned": {top: files[top] for top in tops - shipped if top not in owners},
}
with open(report_path, "w") as file:
    json.dump(report, file)
"""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_by(requirements: list[str]) -> set[str]:
    """The distributions ``pip install`` of ``requirements`` brings: them and their dependencies
    (extras and other platforms' markers left out), as installed here."""
    seen: set[str] = set()
    todo = [Requirement(line).name for line in requirements]
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def _in_checkout(file: str) -> bool:
    return any(Path(file).is_relative_to(source) for source in SOURCES)


def _train_cnn(splits: data.Splits) -> RawImageClassifier:
    """simple_cnn, 3 epochs of Adam on the digits' training split (~1 s on a CPU core)."""
    torch.manual_seed(0)
    network = models.build("simple_cnn", num_classes=10, in_channels=1, image_size=8, width=8)
    mean, std = channel_stats(splits.train_x)
    model = RawImageClassifier(network, mean, std)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = splits.train_x.float(), splits.train_y
    for _ in range(3):
        for batch in torch.randperm(len(y)).split(64):
            loss = torch.nn.functional.nll_loss(model(x[batch]).log(), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def _files(directory: Path) -> dict[str, int]:
    """Every file under ``directory`` and its modification time (ns)."""
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in directory.rglob("*")}


@pytest.fixture(scope="module")
def splits() -> data.Splits:
    return data.load("digits", seed=0)


def _bag_of_sift_knn(cache_dir: Path) -> Pipeline:
    return build_pipeline(
        {"name": "bag_of_sift", "resize": 16, "vocab_size": 32, "sample_size": 4000},
        {"name": "knn", "k": 3},
        cache_dir=cache_dir,
    )


def _registered(kind: str, splits: data.Splits, tmp: Path) -> tuple[str, str, np.ndarray]:
    """Train a model of ``kind`` on the digits and export it as tuner does after a search, into
    a new store in ``tmp``. Returns the store's URI, the model's ``models:/`` URI and its
    probabilities on the test images, computed here. A pipeline caches its features in
    ``tmp/features``, as a search's trials do."""
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    location = (tmp / "artifacts").as_uri()
    run = client.create_run(client.create_experiment(f"digits_{kind}", location))
    x_test = splits.test_x.numpy()
    if kind == "deep":
        model = _train_cnn(splits)
        with torch.no_grad():
            expected = model(torch.from_numpy(x_test).float()).numpy()
    else:
        model = _bag_of_sift_knn(tmp / "features")
        expected = model.fit(splits.train_x.numpy(), splits.train_y.numpy()).predict_proba(x_test)
    version = export.log_best_model(
        uri,
        run.info.run_id,
        model,
        x_test[: export.EXAMPLE_IMAGES],
        classes=splits.classes,
        registered_name=f"digits_{kind}",
    )
    return uri, f"models:/{version.name}/{version.version}", expected


def _requirements(uri: str, model_uri: str) -> list[str]:
    """The model's requirements.txt, as MLflow logged it."""
    _, name, version = model_uri.split("/")
    logged = MlflowClient(uri).get_model_version_download_uri(name, version)
    local = mlflow.artifacts.download_artifacts(f"{logged}/requirements.txt")
    return Path(local).read_text().split()


@pytest.fixture(scope="module", params=["deep", "classical"])
def served(request, splits, tmp_path_factory) -> dict:
    """A registered model of each kind, served by SERVE with an empty HOME, in an empty working
    directory. Returns SERVE's report, and what the tests judge it by. Slow: ~20 s a kind on a
    busy core, most of it a fresh Python importing torch and MLflow."""
    tmp = tmp_path_factory.mktemp(request.param)
    (tmp / "features").mkdir()
    uri, model_uri, expected = _registered(request.param, splits, tmp)
    cached = _files(tmp / "features")  # as the "search" left it: serving must add nothing
    installed = _installed_by(_requirements(uri, model_uri))  # mlflow's line is there too
    (tmp / "installed.json").write_text(json.dumps(sorted(installed)))
    np.save(tmp / "images.npy", splits.test_x.numpy())
    home, scratch, cwd = (tmp / name for name in ("home", "scratch", "cwd"))
    for directory in (home, scratch, cwd):
        directory.mkdir()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_REGISTRY_URI": uri,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "TORCH_HOME": str(home / ".cache" / "torch"),
        "TMPDIR": str(scratch),  # MLflow's copy of the model: a download, not a cache
    }
    paths = [tmp / name for name in ("installed.json", "images.npy", "report.json")]
    command = [sys.executable, "-I", "-c", SERVE, model_uri, *map(str, paths)]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode:
        pytest.fail(f"serving the {request.param} model failed:\n{done.stderr[-3000:]}")
    return {
        **json.loads(paths[-1].read_text()),
        "kind": request.param,
        "expected": expected,
        "truth": splits.test_y.numpy(),
        "classes": list(splits.classes),
        "installed": installed,
        "cached": (cached, _files(tmp / "features")),
        "written": [str(path) for folder in (home, cwd) for path in folder.rglob("*")],
    }


@pytest.mark.slow
def test_the_served_model_classifies_real_digits_as_it_did_here(served):
    predictions = np.array(served["predictions"])
    np.testing.assert_allclose(predictions, served["expected"], rtol=1e-4, atol=1e-6)
    assert served["labels"] == [served["classes"][i] for i in predictions.argmax(1)]
    accuracy = (predictions.argmax(1) == served["truth"]).mean()
    assert accuracy > 0.8, f"{served['kind']}: test accuracy {accuracy:.3f}"


@pytest.mark.slow
def test_every_package_imported_is_installed_by_the_requirements(served):
    missing = {_canonical(d) for d in served["distributions"]} - served["installed"]
    assert not missing, f"{served['kind']}: imported, not required: {sorted(missing)}"
    # Modules no distribution owns: made at run time (no file) or extensions of a package.
    for name, file in served["unowned"].items():
        assert file is None or not _in_checkout(file), f"{name} from {file}"


@pytest.mark.slow
def test_tuner_code_a_model_needs_comes_with_it(served):
    """A pipeline's steps are tuner's classes: the model carries ``models`` (code_paths); a
    pt2 graph needs no Python code of ours."""
    expected = {"deep": set(), "classical": {"models"}}[served["kind"]]
    assert set(served["shipped"]) == expected
    assert not any(_in_checkout(file) for file in served["shipped"].values())


@pytest.mark.slow
def test_nothing_is_written_to_a_cache(served):
    before, after = served["cached"]
    changed = sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )
    assert not changed, f"tuner's feature cache changed: {changed}"
    assert not served["written"], f"written under HOME or the working folder: {served['written']}"


def test_a_fitted_pipeline_without_cache_dirs_writes_nothing_and_pickles_no_path(splits, tmp_path):
    """What the export relies on: ``cache_dir=None`` after fitting turns every cache off, and
    the pickled estimator keeps no path of the machine that fitted it."""
    x, y = splits.train_x.numpy()[:300], splits.train_y.numpy()[:300]
    pipeline = _bag_of_sift_knn(tmp_path).fit(x, y)
    written = _files(tmp_path)
    assert written  # the cache was on while fitting
    pipeline.set_params(features__cache_dir=None, classifier__cache_dir=None)
    state = pickle.dumps(pipeline)
    assert tmp_path.name.encode() not in state
    x_test = splits.test_x.numpy()[:50]  # images the cache has not seen
    expected = pipeline.predict_proba(x_test)
    np.testing.assert_array_equal(pickle.loads(state).predict_proba(x_test), expected)
    assert _files(tmp_path) == written


# ---------------------------------------------------------------------------------------------
# `mlflow models serve`: the registered model over HTTP
# ---------------------------------------------------------------------------------------------

SCORING_SERVER_START_S = 180  # a fresh Python importing MLflow, uvicorn and torch on a busy core


@pytest.fixture(scope="module", params=["deep", "classical"])
def scoring_server(request, splits, tmp_path_factory) -> Iterator[dict]:
    """``mlflow models serve -m models:/NAME/VERSION`` of a registered model of each kind, on a
    free loopback port, stopped (its whole process group) at the end."""
    tmp = tmp_path_factory.mktemp(f"serve_{request.param}")
    uri, model_uri, expected = _registered(request.param, splits, tmp)
    port, log = free_port(), tmp / "serve.log"
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1"]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        # MLflow starts uvicorn by name: the one beside this Python, as in an activated venv.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=tmp,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(process, f"{url}/ping", log, SCORING_SERVER_START_S)
        yield {"url": url, "expected": expected, "kind": request.param}
    finally:
        stop_group(process)


def _invoke(url: str, body: dict) -> tuple[int, dict]:
    """POST ``body`` as JSON to the scoring server's /invocations: (HTTP status, its JSON)."""
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_mlflow_models_serve_names_the_class_of_each_image(scoring_server, splits):
    images = splits.test_x[:20].numpy()  # uint8 (N, 1, 8, 8), as read from disk
    status, answer = _invoke(scoring_server["url"], {"inputs": images.tolist()})
    assert status == 200, answer
    rows = answer["predictions"]
    expected = scoring_server["expected"][:20]
    assert [row["label"] for row in rows] == [splits.classes[i] for i in expected.argmax(1)]
    probabilities = np.array([row["probabilities"] for row in rows])
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)
    assert [row["probability"] for row in rows] == pytest.approx(expected.max(1).tolist())


@pytest.mark.slow
@pytest.mark.parametrize("pixel", [300, -1])
def test_mlflow_models_serve_refuses_pixels_outside_uint8(scoring_server, pixel):
    image = np.full((1, 1, 8, 8), pixel).tolist()
    status, answer = _invoke(scoring_server["url"], {"inputs": image})
    assert status == 400
    assert f"{pixel} out of bounds for uint8" in answer["message"]
