"""Which tracking store a search uses, whether it answers, and whether it lets us in."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from urllib.parse import urlsplit

import requests  # MLflow's own HTTP client library (it takes a URL's user:password@ too)
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import get_default_host_creds, read_mlflow_creds
from mlflow.utils.rest_utils import http_request, verify_rest_response

from tuner.core.errors import UsageError
from tuner.core.secrets import mask_secrets


def is_server(tracking_uri: str) -> bool:
    """A tracking server (HTTP), rather than a database or folder this machine opens."""
    return tracking_uri.startswith(("http://", "https://"))


SERVER_TIMEOUT_S = 5  # a tracking server that has not answered by then is taken as down


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a sqlite tracking URI (relative ones from the cwd), else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).resolve()


def unanswered(url: str, timeout: float = SERVER_TIMEOUT_S) -> str | None:
    """Why nothing answers HTTP at ``url`` (the error's name), None when something does: any
    answer counts (an auth proxy may refuse), only silence means the server is down."""
    try:
        requests.get(url, timeout=timeout)
    except requests.RequestException as error:
        return type(error).__name__
    return None


def health_url(tracking_uri: str) -> str:
    """What a tracking server answers at while it is up (`mlflow server`'s health check)."""
    return f"{tracking_uri.rstrip('/')}/health"


STORE_LOCK_S = 300  # creating a store's tables takes seconds; minutes means something is stuck


def store_lock(database: Path | None) -> AbstractContextManager[object]:
    """Held while a process opens a sqlite ``database`` (MLflow's or Optuna's): the first open
    creates its tables, and two searches started at once on a new store would both create them
    and one fail (``table ... already exists``). A lock file beside the database, released
    when its process ends however it ends; nothing for other stores, or in a folder this user
    can't write (nor create a database in)."""
    if database is None:
        return nullcontext()
    database.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(database.parent, os.W_OK):
        return nullcontext()
    return FileLock(database.with_name(f"{database.name}.lock"), timeout=STORE_LOCK_S)


def check_store(tracking_uri: str, *, writes: str | None = None) -> None:
    """A UsageError, before anything starts, for a store nothing can be read from (with
    ``writes``, an experiment's name: nor written to): a server that does not answer (MLflow's
    client would retry for minutes) or refuses us (``refusal``), a scheme MLflow doesn't know.
    """
    shown = mask_secrets(tracking_uri)
    fix = "start it, or point --tracking-uri (or MLFLOW_TRACKING_URI) at a running one"
    if is_server(tracking_uri):
        reason = unanswered(health_url(tracking_uri))
        if reason:
            raise UsageError(f"no MLflow tracking server answers at {shown} ({reason}); {fix}")
        with server_refusals(tracking_uri):
            _check_access(tracking_uri, writes)
        return
    try:
        with store_lock(sqlite_database(tracking_uri)):  # its first open creates its tables
            MlflowClient(tracking_uri).search_experiments(max_results=1)
    except (MlflowException, OSError) as error:  # OSError: a sqlite path MLflow can't make
        reason = str(error).strip().split(". See ")[0]  # MLflow adds a link to its docs
        raise UsageError(f"can't use the MLflow store {shown}: {reason}") from None


# Where the auth app says which permission a user has on an experiment or a registered model:
# mlflow.server.auth.routes.GET_USER_PERMISSION (that module needs the server's Flask packages).
PERMISSION_ROUTE = "/api/3.0/mlflow/users/permissions/get"


WRITE_PERMISSIONS = ("EDIT", "MANAGE")  # the auth app's permissions that may write (can_update)


LOGIN = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"  # what MLflow's client sends


_ENDPOINT = re.compile(r"request to endpoint (\S+) failed")  # in MLflow's non-JSON HTTP errors


def _check_access(tracking_uri: str, writes: str | None) -> None:
    """Read from the server (a missing or wrong login is refused here, HTTP 401); with
    ``writes``, ask it whether this user may write to that experiment and to the registered
    model of the same name (the search registers its best model there), where they exist:
    anyone logged in may create them. A search would learn it only after Ray started."""
    client = MlflowClient(tracking_uri)
    if writes is None:
        client.search_experiments(max_results=1)
        return
    experiment = client.get_experiment_by_name(writes)  # 403 without READ on it
    if experiment is not None:
        _check_writable(tracking_uri, "experiment", experiment.experiment_id, writes)
    try:
        client.get_registered_model(writes)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    else:
        _check_writable(tracking_uri, "registered_model", writes, writes)


def _check_writable(tracking_uri: str, kind: str, resource_id: str, name: str) -> None:
    """A UsageError unless the auth app gives this client's user a permission that writes on
    resource ``kind`` ``resource_id``. Nothing to ask without a username (a server that wanted
    one refused the read before) or of a server without the auth app (404: anyone writes)."""
    creds = get_default_host_creds(tracking_uri)
    if not creds.username:
        return
    params = {"username": creds.username, "resource_type": kind, "resource_id": resource_id}
    response = http_request(creds, PERMISSION_ROUTE, "GET", params=params)
    if response.status_code == 404:
        return
    permission = verify_rest_response(response, PERMISSION_ROUTE).json()["permission"]
    if permission not in WRITE_PERMISSIONS:
        what = kind.replace("_", " ")
        raise UsageError(
            f"the MLflow server at {mask_secrets(tracking_uri)} lets user {creds.username!r} "
            f"only {permission} on {what} {name!r}, and a search writes to it: ask the "
            f"server's admin for EDIT on it, or search under another name (run --name)"
        )


def refusal(error: BaseException, tracking_uri: str) -> str | None:
    """What to tell the user when the tracking server refused a request: HTTP 401 (who we are:
    what to set) or 403 (what we may do: what to ask for); None for any other error. The one
    place that decides it: MLflow's client raises a RestException, or an MlflowException when
    the answer isn't JSON (the auth app's isn't); artifact transfers raise requests' HTTPError."""
    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        endpoint = _ENDPOINT.search(str(error))
        path = endpoint[1] if endpoint else ""
    elif isinstance(error, requests.HTTPError) and error.response is not None:
        status = error.response.status_code
        path = urlsplit(error.response.url).path
    else:
        return None
    server = f"the MLflow server at {mask_secrets(tracking_uri)}"
    user, password = read_mlflow_creds()
    if status == 401 and not (user and password):
        return f"{server} wants a login: set {LOGIN} to your account on it (its admin makes one)"
    if status == 401:
        return f"{server} did not accept user {user!r} and its password: check {LOGIN}"
    if status == 403:
        who = f"user {user!r}" if user else "this client"
        return (
            f"{server} denied {who} {path or 'a request'}: ask its admin for READ on the "
            "experiment to read it, EDIT to write to it"
        )
    return None


@contextlib.contextmanager
def server_refusals(tracking_uri: str) -> Iterator[None]:
    """Inside it, the tracking server's refusal is a UsageError (one line, ``refusal``'s),
    not MLflow's traceback."""
    try:
        yield
    except Exception as error:
        line = refusal(error, tracking_uri)
        if line is None:
            raise
        raise UsageError(line) from None
