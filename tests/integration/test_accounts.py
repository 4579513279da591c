"""Accounts on the team server: `make server SERVER_AUTH=1` (MLflow's basic-auth app), the admin's
password from a file; clients without valid credentials stop before training, a user with READ
on an experiment cannot log to it until its owner's admin grants EDIT."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.server import get_app_client

from tests.conftest import compose_config
from tests.integration.cli import CliResult
from tests.integration.services import TINY, TrackingServer
from xent_tf.config import to_config
from xent_tf.track import connection, writing
from xent_tf.train import pipeline

# One worker runs them all (--dist loadgroup): the module's server with auth starts once.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("accounts")]

ADMIN_PASSWORD = "admin-Secret-4-tests"
USERS = {"alice": "alice-Passw0rd-x", "bob": "bob-Passw0rd-x"}


def log_in(monkeypatch: pytest.MonkeyPatch, user: str | None, password: str | None) -> None:
    """Be ``user`` for MLflow's client (the standard environment variables), or nobody."""
    for name, value in (
        ("MLFLOW_TRACKING_USERNAME", user),
        ("MLFLOW_TRACKING_PASSWORD", password),
    ):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """`make server SERVER_AUTH=1` with users alice and bob (created by the admin)."""
    workdir = tmp_path_factory.mktemp("auth-server")
    server = TrackingServer(
        f"sqlite:///{workdir / 'mlflow.db'}", workdir, workers=1, admin_password=ADMIN_PASSWORD
    )
    server.start()
    with pytest.MonkeyPatch.context() as patch:
        log_in(patch, "admin", ADMIN_PASSWORD)
        admin = get_app_client("basic-auth", tracking_uri=server.uri)
        for user, password in USERS.items():
            admin.create_user(user, password)
    yield server
    server.stop()


def fail_if_trained(*args: object, **kwargs: object) -> None:
    raise AssertionError("training started although the server refused the client")


def tiny_config(uri: str, experiment: str) -> object:
    return to_config(
        compose_config(
            [*TINY, "tracking=server", f"tracking.uri={uri}", f"experiment_name={experiment}"]
        )
    )


@pytest.mark.parametrize(
    ("user", "password", "refused"),
    [(None, None, "a client without credentials"), ("alice", "wrong", "user 'alice'")],
)
def test_a_client_without_valid_credentials_stops_before_training(
    auth_server: TrackingServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    user: str | None,
    password: str | None,
    refused: str,
) -> None:
    log_in(monkeypatch, user, password)
    monkeypatch.setattr(pipeline, "configure_runtime", fail_if_trained)
    started = time.monotonic()
    with pytest.raises(connection.TrackingUnauthorizedError) as error:
        pipeline.run_experiment(tiny_config(auth_server.uri, "alice-study"), tmp_path / "out")  # type: ignore[arg-type]
    assert str(error.value).startswith(
        f"not authorised by MLflow tracking server {auth_server.uri}: it refused {refused} "
        "(HTTP 401); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    )
    assert time.monotonic() - started < 10  # no retries: a refusal is not an outage


def test_a_reader_cannot_log_to_an_experiment_until_granted_edit(
    auth_server: TrackingServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., CliResult],
) -> None:
    uri = auth_server.uri
    # alice trains a run: she creates the experiment, and owns it (MANAGE).
    log_in(monkeypatch, "alice", USERS["alice"])
    config = tiny_config(uri, "alice-study")
    summary = pipeline.run_experiment(config, tmp_path / "alice")  # type: ignore[arg-type]
    alice_runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("alice-study").experiment_id]
    )
    assert [r.info.status for r in alice_runs] == ["FINISHED"]
    assert alice_runs[0].data.metrics["val/loss"] == pytest.approx(summary.history[-1].val_loss)

    # bob has READ (the server's default permission): he sees her run...
    log_in(monkeypatch, "bob", USERS["bob"])
    bob = MlflowClient(uri)
    experiment_id = bob.get_experiment_by_name("alice-study").experiment_id
    assert [r.info.run_id for r in bob.search_runs([experiment_id])] == [alice_runs[0].info.run_id]
    # ...but his run in her experiment is refused before it trains, saying so,
    monkeypatch.setattr(pipeline, "fit", fail_if_trained)
    with pytest.raises(connection.TrackingUnauthorizedError) as error:
        pipeline.run_experiment(config, tmp_path / "bob")  # type: ignore[arg-type]
    assert str(error.value).startswith(
        f"not authorised: MLflow tracking server {uri} does not let user 'bob' create a run in "
        "experiment 'alice-study' (PERMISSION_DENIED)"
    )
    # ...and so is his sweep, before any job is launched (the launching process never trains).
    result = cli(
        "-m",
        "seed=0,1",
        *TINY,
        "tracking=server",
        f"tracking.uri={uri}",
        "experiment_name=alice-study",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert (
        f"the sweep cannot start: not authorised: MLflow tracking server {uri} does not let "
        "user 'bob' create a run in experiment 'alice-study'" in result.output
    ), result.output[-3000:]
    assert "Launching" not in result.output and "training on" not in result.output
    assert len(bob.search_runs([experiment_id])) == 1  # nothing of bob's was written

    # Per-experiment permission: the admin grants bob EDIT on it, and he can log there.
    log_in(monkeypatch, "admin", ADMIN_PASSWORD)
    get_app_client("basic-auth", tracking_uri=uri).grant_user_permission(
        "bob", "experiment", experiment_id, "EDIT"
    )
    log_in(monkeypatch, "bob", USERS["bob"])
    run_id, _ = writing.start_parent_run(uri, "alice-study", "bob-granted", {})
    assert MlflowClient(uri).get_run(run_id).info.status == "RUNNING"
    assert len(bob.search_runs([experiment_id])) == 2
