"""`python -m tuner ...`: run a search, read its results, browse them, list what's available.

Usage errors (a bad spec, a missing dataset, a wrong flag) print one line and exit 2. A search
that finished while its tracking server was down exits 3: one line names the journal that keeps
what the server did not take, and the `tuner sync` command that writes it there (and logs the
search's plots and registers its model, which needed the server).

Each command imports what it uses inside its function: `tuner best` and `tuner --help` must
start in a second or two, without torch, Ray Tune or a search's modules.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.core.errors import UsageError
from tuner.core.secrets import mask_secrets
from tuner.core.terminal import note, say

if TYPE_CHECKING:  # the spec's module imports Ray, which reading commands do without
    from tuner.spec.document import Spec

EXIT_USAGE = 2
EXIT_UNWRITTEN = 3  # the search finished; MLflow writes wait in its journal for `tuner sync`
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by Ctrl-C


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default prints the whole usage block
        command = self.prog.partition(" ")[2]  # "tuner run" -> "run"; main prints "tuner: error"
        raise UsageError(f"{command + ': ' if command else ''}{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tuner",
        description="Hyperparameter search for image classifiers: one YAML spec, "
        "Ray Tune (Optuna + ASHA), every trial recorded in MLflow.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _search_commands(commands)
    _reading_commands(commands)
    _catalogue_commands(commands)
    return parser


def _search_commands(commands: Any) -> None:
    """run, resume, sync, repeat: the commands that search (or finish a search)."""
    run = commands.add_parser("run", help="run the search a spec describes")
    run.add_argument("spec", type=Path, help="the experiment's YAML file (see search_spaces/)")
    run.add_argument("--name", help="experiment name (overrides the spec's `name`)")
    run.add_argument("--num-samples", type=int, help="number of trials (search.num_samples)")
    run.add_argument("--max-epochs", type=int, help="epoch budget per trial (scheduler.max_epochs)")
    _add_overrides(run)
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue this spec's interrupted search from its storage (same MLflow run)",
    )
    _tracking_flag(run, spec=True)
    _storage_flag(run)
    _verbose_flag(run)
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
    _verbose_flag(resume)

    sync = commands.add_parser(
        "sync", help="write to MLflow what a search kept while its tracking server was down"
    )
    sync.add_argument("name", help="experiment name")
    _tracking_flag(sync)
    _storage_flag(sync)

    repeat = commands.add_parser(
        "repeat",
        help="train an experiment's best config again with more seeds; exit 1 when its "
        "recorded test_acc is not reproduced",
    )
    repeat.add_argument("name", help="experiment name (its latest finished run)")
    repeat.add_argument(
        "--seeds", type=_at_least_two, default=5, help="how many seeds, at least 2 (default 5)"
    )
    _tracking_flag(repeat)
    repeat.add_argument("--address", help="join this Ray cluster (see `run --help`)")


def _reading_commands(commands: Any) -> None:
    """best, report, predict, compare, ui: the commands that read finished searches."""
    best = commands.add_parser("best", help="print the best trials of an experiment's latest run")
    best.add_argument("name", help="experiment name")
    best.add_argument("--top", type=_positive, default=5, help="how many trials (default 5)")
    best.add_argument("--json", action="store_true", help="machine-readable output")
    best.add_argument(
        "--pareto",
        action="store_true",
        help="the whole Pareto front of a search with objectives: (instead of the top trials)",
    )
    best.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="also save the registered best network's weights (.safetensors): a model's "
        "pretrained_file in another search (docs/pretrained.md)",
    )
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
    compare.add_argument("name1", help="an experiment name")
    compare.add_argument("name2", help="another experiment name")
    _tracking_flag(compare)

    ui = commands.add_parser(
        "ui", help="start the MLflow UI on a search's trials, sorted by its metric"
    )
    ui.add_argument(
        "name", nargs="?", help="experiment name (default: the latest search's experiment)"
    )
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    ui.add_argument(
        "--verbose",
        action="store_true",
        help="the server's own output too (MLflow's warnings, uvicorn's lines)",
    )
    _tracking_flag(ui)


def _catalogue_commands(commands: Any) -> None:
    """list, data: what tuner offers, and datasets to fetch."""
    listing = commands.add_parser("list", help="list models or datasets")
    listing.add_argument("what", choices=["models", "datasets"], help="what to list")
    sized = "models: parameter counts for images of this many"
    listing.add_argument("--in-channels", type=_positive, default=3, help=f"{sized} channels")
    listing.add_argument("--image-size", type=_positive, default=32, help=f"{sized} pixels a side")
    listing.add_argument("--num-classes", type=_positive, default=10, help=f"{sized} classes")

    data = commands.add_parser("data", help="dataset utilities")
    data_commands = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    fetch = data_commands.add_parser("fetch", help="download a dataset (needs a network)")
    fetch.add_argument("dataset", help="cifar10, mnist or fashion_mnist")
    fetch.add_argument("--root", type=Path, required=True, help="directory to download into")
    prepare = data_commands.add_parser(
        "prepare", help="decode a spec's images into each node's cache before a search"
    )
    prepare.add_argument("spec", type=Path, help="the experiment's YAML file")
    _add_overrides(prepare)
    prepare.add_argument(
        "--address",
        help="build it on every node of this running Ray cluster (e.g. auto); default: "
        "$RAY_ADDRESS, else on this machine only",
    )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def _at_least_two(text: str) -> int:
    if not text.isdigit() or int(text) < 2:
        raise argparse.ArgumentTypeError(f"a spread needs at least 2 seeds, got {text!r}")
    return int(text)


@contextlib.contextmanager
def _store(tracking_uri: str | None) -> Iterator[str]:
    """The store a command reads (default: default_tracking_uri()), checked; a sqlite one must
    exist (MLflow would create an empty one and print its set-up lines). Inside the block, the
    server's refusal of a request (a login or a permission it wants) is one line naming it."""
    from tuner.tracking.files import default_tracking_uri
    from tuner.tracking.store import check_store, server_refusals, sqlite_database

    uri = tracking_uri or default_tracking_uri()
    database = sqlite_database(uri)
    if database is not None and not database.is_file():
        raise UsageError(
            f"no MLflow store at {database} (tracking URI {mask_secrets(uri)}); "
            "run a search first, or point --tracking-uri or MLFLOW_TRACKING_URI at its store"
        )
    check_store(uri)
    with server_refusals(uri):
        yield uri


def _storage_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        help="where Ray Tune keeps experiment state and checkpoints: a directory, a shared "
        "file system or s3://... (default: ./tuner_results)",
    )


def _verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Ray's trial table and Ray's and Optuna's own messages instead of tuner's progress "
        "line (a resumed search keeps the table or line it started with)",
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
    # MLflow draws a progress bar for each artifact it downloads or logs (a spec a resume reads,
    # a report's plots, the model a search registers): lines that say nothing to a user.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        with warnings.catch_warnings():  # puts Python's own display back afterwards
            warnings.showwarning = _show_warning
            args = build_parser().parse_args(argv)
            return COMMANDS[args.command](args)
    except UsageError as error:
        note(f"tuner: error: {error}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        note("tuner: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `tuner list models | head` closed the pipe: nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's exit flush
        return 1


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    """``--set KEY.PATH=VALUE``, repeatable: what every command that reads a spec file takes."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override any spec value, e.g. --set search.algorithm=random (repeatable)",
    )


def process_main() -> int:
    """main() in a process of its own (the ``tuner`` command, ``python -m tuner``)."""
    code = main()
    # Python's exit sweeps every object left for garbage cycles: about 0.9 s of `tuner best`
    # (MLflow's import alone leaves some 270,000). Frozen, they go with the process; what a
    # command writes is written (and closed) before main() returns.
    gc.freeze()
    return code


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """A warning as one line: tuner's own as written ("tuner: skipped the ..."), others with
    their kind; not Python's file, line number and source line."""
    text = str(message)
    if not text.startswith("tuner:"):
        text = f"{category.__name__}: {text}"
    if file is None:
        note(text)  # through the terminal writer, which clears the live progress line first
    else:  # showwarning called with a file of its own: written there, as Python would
        file.write(f"{text}\n")


def _run(args: argparse.Namespace) -> int:
    spec, overrides = run_spec(args)
    if args.resume:
        _check_resumed_as_started(spec, overrides, args.tracking_uri)
    return _search(spec, args.spec, args, resume=args.resume, overrides=overrides)


def _check_resumed_as_started(spec: Spec, overrides: list[str], tracking_uri: str | None) -> None:
    """`run SPEC --resume` continues the search as it was started: the same flags and --set."""
    from mlflow.tracking import MlflowClient

    from tuner.tracking.records import latest_parent
    from tuner.tracking.tags import SearchTags

    with _store(tracking_uri or spec.tracking.uri) as uri:
        parent = latest_parent(MlflowClient(uri), spec.experiment)
    started = list(SearchTags.of(parent).overrides)
    given = [mask_secrets(override) for override in overrides]
    if sorted(started) != sorted(given):
        raise UsageError(
            f"--resume continues {spec.experiment!r} as it was started, with "
            f"{' '.join(started) or 'no overrides'}; got {' '.join(given) or 'none'}: "
            f"repeat those flags, or run: python -m tuner resume {spec.experiment}"
        )


def run_spec(args: argparse.Namespace) -> tuple[Spec, list[str]]:
    """The spec `tuner run` runs: the file, with ``--set`` and the shortcut flags applied."""
    from tuner.spec.document import load_spec

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

    from tuner.spec.document import load_spec
    from tuner.tracking.records import latest_parent, overrides_of, spec_of
    from tuner.tracking.tags import SearchTags

    with _store(args.tracking_uri) as uri, tempfile.TemporaryDirectory() as directory:
        parent = latest_parent(MlflowClient(uri), args.name)
        args.tracking_uri = uri
        spec_path = spec_of(parent, uri, Path(directory))
        overrides = overrides_of(parent)
        # Its own code (import paths) from the folders the search started with.
        code_path = SearchTags.of(parent).code_path or None
        spec = load_spec(spec_path, overrides, code_path=code_path)
        return _search(spec, spec_path, args, resume=True, overrides=overrides)


def _search(
    spec: Any,
    spec_path: Path,
    args: argparse.Namespace,
    *,
    resume: bool,
    overrides: list[str],
) -> int:
    from tuner.core.quiet import quiet_libraries
    from tuner.search.ray_start import RayStart
    from tuner.tracking.files import search_tracking_uri
    from tuner.tracking.store import check_store, is_server, server_refusals

    quiet_libraries(args.verbose)  # before Ray starts: some of its messages come from its start
    tracking_uri = search_tracking_uri(args.tracking_uri, spec.tracking.uri)
    if is_server(tracking_uri):  # one that does not answer, or refuses us: one line, before Ray
        check_store(tracking_uri, writes=spec.experiment)
    # Ray starts while the rest of tuner (torch, Ray Tune) is imported and the search gets ready.
    ray_start = RayStart(
        args.address,
        forward_worker_output=sys.stderr.isatty(),  # trials draw progress bars on a terminal
        verbose=args.verbose,
    )
    try:
        if not is_server(tracking_uri):
            check_store(tracking_uri)  # a new sqlite store's tables are made here
        from tuner.commands.run import Interrupted, Unwritten, run_search
    except BaseException:
        ray_start.cancel()
        raise
    from tuner.reading.summary import print_summary

    try:
        with server_refusals(tracking_uri):
            summary = run_search(
                spec,
                spec_path,
                tracking_uri=tracking_uri,
                ray_start=ray_start,
                storage=args.storage,
                resume=resume,
                overrides=overrides,
                verbose=args.verbose,
            )
    except Unwritten as kept:
        note(
            f"tuner: error: the search finished, but the MLflow tracking server did not take "
            f"{kept.count} writes; they are kept in {kept.journal}. Once it answers, write them, "
            "log the plots and register the model with: "
            f"python -m tuner sync {spec.experiment}{_store_flags(args)}"
        )
        return EXIT_UNWRITTEN
    except Interrupted as stopped:
        # `resume` starts it again from what MLflow recorded: the spec file and every override.
        note(
            f"tuner: interrupted; the search state is saved in {stopped}. "
            f"Continue with: python -m tuner resume {spec.experiment}{_store_flags(args)}"
        )
        return EXIT_INTERRUPTED
    print_summary(summary)
    return 0


def _store_flags(args: argparse.Namespace) -> str:
    """The flags a later command needs to find the search again: its tracking URI and storage,
    when given on the command line (else the defaults find them)."""
    flags = f" --tracking-uri {mask_secrets(args.tracking_uri)}" if args.tracking_uri else ""
    return flags + (f" --storage {args.storage}" if args.storage else "")


def _sync(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from models.options import use_code_path
    from tuner.publishing.closing import publish_kept
    from tuner.tracking.files import SearchFiles
    from tuner.tracking.records import latest_parent
    from tuner.tracking.tags import SearchTags
    from tuner.tracking.writer import write_journal

    with _store(args.tracking_uri) as uri:
        parent = latest_parent(MlflowClient(uri), args.name)
        tags = SearchTags.of(parent)
        files = SearchFiles(tags.folder(args.storage))
        journal = files.journal
        written = write_journal(uri, journal)
        if written:
            say(f"wrote the {written} MLflow writes kept in {journal} to {mask_secrets(uri)}")
        else:
            say(f"nothing to write: no MLflow writes are kept in {journal}")
        use_code_path(tags.code_path)  # the kept model of the search's own code unpickles
        model_uri = publish_kept(uri, files)
    if model_uri:
        say(f"registered the best model: {model_uri}")
    return 0


def _repeat(args: argparse.Namespace) -> int:
    from tuner.commands.repeat import repeat_recorded

    with _store(args.tracking_uri) as uri:
        reproduction = repeat_recorded(uri, args.name, args.seeds, address=args.address)
    say("\n".join(reproduction.lines()))
    return 0 if reproduction.reproduced else 1


def _best(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from tuner.conclusion import pareto
    from tuner.reading.summary import print_best, print_pareto
    from tuner.tracking.records import (
        best_trials,
        headline_of,
        latest_parent,
        parsed_params,
        trials_of,
    )
    from tuner.tracking.tags import SearchTags

    with _store(args.tracking_uri) as uri:
        client = MlflowClient(uri)
        parent = latest_parent(client, args.name)
        if args.pareto:
            trials = pareto.recorded(parent, trials_of(client, parent))
        else:
            trials = best_trials(client, parent, args.top)
    if args.json:
        rows = [{**t.__dict__, "params": parsed_params(t.params)} for t in trials]
        say(json.dumps({**headline_of(parent), "trials": rows}, indent=2))
    elif args.pareto:
        objectives = SearchTags.of(parent).objectives
        print_pareto(args.name, headline_of(parent), objectives, trials)
    else:
        print_best(args.name, headline_of(parent), trials)
    if args.weights:  # torch and MLflow's model loading: imported only for this
        from tuner.publishing.export import save_weights

        saved = save_weights(uri, args.name, args.weights)
        say(f"saved {saved} tensors of the registered best model to {args.weights}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from tuner.reading.report import write_report

    with _store(args.tracking_uri) as uri:
        say(write_report(uri, args.name, args.out))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from tuner.publishing.export import predict

    with _store(args.tracking_uri) as uri:
        for path, label, probability in predict(uri, args.name, args.images):
            say(f"{path}\t{label}\t{probability:.4f}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from tuner.reading.report import compare

    with _store(args.tracking_uri) as uri:
        say(compare(uri, args.name1, args.name2), end="")
    return 0


def _ui(args: argparse.Namespace) -> int:
    import signal

    from mlflow.tracking import MlflowClient

    from tuner.reading.ui import Server, runs_view, wait_until_answering
    from tuner.tracking.store import is_server

    with _store(args.tracking_uri) as uri:
        if is_server(uri):  # a tracking server serves its own UI: nothing to start
            say(f"MLflow UI: {uri.rstrip('/')}/#{runs_view(MlflowClient(uri), args.name)}")
            return 0
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        note(f"tuner: warning: the UI on {args.host} is reachable from other machines")
    route = runs_view(MlflowClient(uri), args.name)  # an unknown name fails before the server
    local = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(args.host, args.host)  # any: loopback
    address = f"[{local}]" if ":" in local else local  # an IPv6 address in a URL
    root = f"http://{address}:{args.port}"
    command = ["--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    # One user's browser: MLflow's default of 4 server workers each import its app, and on a
    # small machine the first page waits on their start.
    command += ["--workers", "1"]
    ui = Server([sys.executable, "-m", "mlflow", "ui", *command], verbose=args.verbose)
    server = ui.process
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())  # stop it with this process
    try:
        if wait_until_answering(server, f"{root}/health"):
            say(f"MLflow UI for {mask_secrets(uri)}: {root}/#{route}")
        code = server.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the server too: let it finish
        code = server.wait()
    if code > 0 and (said := mask_secrets(ui.output())):  # it failed (a port taken): its reasons
        note(f"tuner: the MLflow UI server exited with {code}:\n{said}")
    return 128 - code if code < 0 else code  # killed by a signal: the shell's 128 + signal


def _list(args: argparse.Namespace) -> int:
    if args.what == "datasets":
        import data

        for name in sorted(data.DATASETS):
            say(name)
        return 0
    import models

    say(
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
        say(f"{name:<18}{models.count_parameters(model):>14,}")
    return 0


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "prepare":
        from tuner.commands.prepare import prepare
        from tuner.spec.document import load_spec

        prepare(load_spec(args.spec, args.overrides), args.address or os.environ.get("RAY_ADDRESS"))
        return 0
    import data
    from data.fetch import fetch

    try:
        where = fetch(args.dataset, args.root)
    except data.DatasetError as error:
        raise UsageError(str(error)) from None
    say(f"{args.dataset} is in {where}")
    return 0


COMMANDS = {
    "report": _report,
    "predict": _predict,
    "compare": _compare,
    "run": _run,
    "resume": _resume,
    "sync": _sync,
    "repeat": _repeat,
    "best": _best,
    "ui": _ui,
    "list": _list,
    "data": _data,
}
