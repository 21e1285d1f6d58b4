"""`python -m tuner ...`: run a search, read its results, browse them, list what's available.

Usage errors (a bad spec, a missing dataset, a wrong flag) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import UsageError

if TYPE_CHECKING:  # the spec's module imports Ray, which reading commands do without
    from tuner.spec import Spec

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints the whole usage block
        raise UsageError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tuner",
        description="Hyperparameter search for image classifiers: one YAML spec, "
        "Ray Tune (Optuna + ASHA), every trial recorded in MLflow.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run the search a spec describes")
    run.add_argument("spec", type=Path, help="the experiment's YAML file (see search_spaces/)")
    run.add_argument("--name", help="experiment name (overrides the spec's `name`)")
    run.add_argument("--num-samples", type=int, help="number of trials (search.num_samples)")
    run.add_argument("--max-epochs", type=int, help="epoch budget per trial (scheduler.max_epochs)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override any spec value, e.g. --set search.algorithm=random (repeatable)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue this spec's interrupted search from its storage (same MLflow run)",
    )
    _tracking_flag(run, spec=True)
    _storage_flag(run)
    run.add_argument(
        "--address",
        help="join this Ray cluster (e.g. auto, or ray://head:10001); default: $RAY_ADDRESS, "
        "else start Ray on this machine",
    )

    resume = commands.add_parser(
        "resume", help="continue an interrupted experiment, with the spec MLflow kept for it"
    )
    resume.add_argument("name", help="experiment name")
    _tracking_flag(resume)
    _storage_flag(resume)
    resume.add_argument("--address", help="join this Ray cluster (see `run --help`)")

    best = commands.add_parser("best", help="print the best trials of an experiment's latest run")
    best.add_argument("name", help="experiment name")
    best.add_argument("--top", type=int, default=5, help="how many trials (default 5)")
    best.add_argument("--json", action="store_true", help="machine-readable output")
    _tracking_flag(best)

    report = commands.add_parser(
        "report", help="write a self-contained HTML report of an experiment's latest run"
    )
    report.add_argument("name", help="experiment name")
    report.add_argument("--out", type=Path, default=Path("."), help="directory (default: .)")
    _tracking_flag(report)

    predict = commands.add_parser("predict", help="classify image files with the best model")
    predict.add_argument("name", help="experiment name (its registered model)")
    predict.add_argument("images", nargs="+", type=Path, help="image files")
    _tracking_flag(predict)

    compare = commands.add_parser("compare", help="two experiments' best configs and test metrics")
    compare.add_argument("name1")
    compare.add_argument("name2")
    _tracking_flag(compare)

    ui = commands.add_parser("ui", help="start the MLflow UI on the tracking store")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    _tracking_flag(ui)

    listing = commands.add_parser("list", help="list models or datasets")
    listing.add_argument("what", choices=["models", "datasets"])
    listing.add_argument("--in-channels", type=int, default=3)
    listing.add_argument("--image-size", type=int, default=32)
    listing.add_argument("--num-classes", type=int, default=10)

    data = commands.add_parser("data", help="dataset utilities")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    fetch = data_commands.add_parser("fetch", help="download a dataset (needs a network)")
    fetch.add_argument("dataset", help="cifar10, mnist or fashion_mnist")
    fetch.add_argument("--root", type=Path, required=True, help="directory to download into")
    return parser


def _storage_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        help="where Ray Tune keeps experiment state and checkpoints: a directory, a shared "
        "file system or s3://... (default: ./tuner_results)",
    )


def _tracking_flag(parser: argparse.ArgumentParser, *, spec: bool = False) -> None:
    """``spec``: the command reads a spec, whose tracking.uri comes first (runner.run_search)."""
    default = "the spec's tracking.uri, else " if spec else ""
    parser.add_argument(
        "--tracking-uri",
        help=f"MLflow tracking URI (default: {default}$MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db in the current directory)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as error:
        print(f"tuner: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tuner: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    spec, overrides = run_spec(args)
    return _search(
        spec,
        args.spec,
        args,
        resume=args.resume,
        resume_hint=f"run {args.spec} --resume",
        overrides=overrides,
    )


def run_spec(args: argparse.Namespace) -> tuple[Spec, list[str]]:
    """The spec `tuner run` runs: the file, with ``--set`` and the shortcut flags applied."""
    from tuner.spec import load_spec

    overrides = list(args.overrides)
    for flag, key in (
        ("name", "name"),
        ("num_samples", "search.num_samples"),
        ("max_epochs", "scheduler.max_epochs"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_spec(args.spec, overrides), overrides


def _resume(args: argparse.Namespace) -> int:
    import tempfile

    from mlflow.tracking import MlflowClient

    from tuner.results import latest_parent, spec_of
    from tuner.spec import load_spec
    from tuner.tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    parent = latest_parent(MlflowClient(uri), args.name)
    if args.storage is None and "tuner.storage" in parent.data.tags:
        args.storage = parent.data.tags["tuner.storage"].rsplit("/", 1)[0]
    args.tracking_uri = uri
    with tempfile.TemporaryDirectory() as directory:
        spec_path = spec_of(parent, uri, Path(directory))
        spec = load_spec(spec_path)
        return _search(spec, spec_path, args, resume=True, resume_hint=f"resume {args.name}")


def _search(
    spec: Any,
    spec_path: Path,
    args: argparse.Namespace,
    *,
    resume: bool,
    resume_hint: str,
    overrides: list[str] | None = None,
) -> int:
    from tuner.runner import Interrupted, run_search
    from tuner.summary import print_summary

    try:
        summary = run_search(
            spec,
            spec_path,
            tracking_uri=args.tracking_uri,
            storage=args.storage,
            address=args.address,
            resume=resume,
            overrides=overrides or [],
        )
    except Interrupted as stopped:
        print(
            f"tuner: interrupted; the search state is saved in {stopped}. "
            f"Continue with: python -m tuner {resume_hint}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print_summary(summary)
    return 0


def _best(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from tuner.results import latest_parent, summary_of, trials_of
    from tuner.summary import print_best
    from tuner.tracking import default_tracking_uri

    client = MlflowClient(args.tracking_uri or default_tracking_uri())
    parent = latest_parent(client, args.name)
    trials = trials_of(client, parent)[: args.top]
    if args.json:
        print(json.dumps({**summary_of(parent), "trials": [t.__dict__ for t in trials]}, indent=2))
    else:
        print_best(args.name, summary_of(parent), trials)
    return 0


def _report(args: argparse.Namespace) -> int:
    from tuner.report import write_report
    from tuner.tracking import default_tracking_uri

    print(write_report(args.tracking_uri or default_tracking_uri(), args.name, args.out))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from tuner.export import predict
    from tuner.tracking import default_tracking_uri

    for path, label, probability in predict(
        args.tracking_uri or default_tracking_uri(), args.name, args.images
    ):
        print(f"{path}\t{label}\t{probability:.4f}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from tuner.report import compare
    from tuner.tracking import default_tracking_uri

    print(compare(args.tracking_uri or default_tracking_uri(), args.name1, args.name2), end="")
    return 0


def _ui(args: argparse.Namespace) -> int:
    from tuner.secrets import mask_secrets
    from tuner.tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"tuner: warning: the UI on {args.host} is reachable from other machines",
            file=sys.stderr,
        )
    print(f"MLflow UI for {mask_secrets(uri)} at http://{args.host}:{args.port}", flush=True)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    os.execv(sys.executable, command)
    return 0  # not reached: execv replaces this process


def _list(args: argparse.Namespace) -> int:
    if args.what == "datasets":
        import data

        for name in sorted(data.DATASETS):
            print(name)
        return 0
    import models

    print(
        f"{'model':<18}{'parameters':>14}  (input {args.in_channels}x{args.image_size}x"
        f"{args.image_size}, {args.num_classes} classes)"
    )
    for name in sorted(models.MODELS):
        model = models.build(
            name,
            num_classes=args.num_classes,
            in_channels=args.in_channels,
            image_size=args.image_size,
        )
        print(f"{name:<18}{models.count_parameters(model):>14,}")
    return 0


def _data(args: argparse.Namespace) -> int:
    import data
    from data.fetch import fetch

    try:
        where = fetch(args.dataset, args.root)
    except data.DatasetError as error:
        raise UsageError(str(error)) from None
    print(f"{args.dataset} is in {where}")
    return 0


COMMANDS = {
    "report": _report,
    "predict": _predict,
    "compare": _compare,
    "run": _run,
    "resume": _resume,
    "best": _best,
    "ui": _ui,
    "list": _list,
    "data": _data,
}
