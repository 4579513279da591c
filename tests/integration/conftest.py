"""Session-wide services for the integration tests: each is started once, on 127.0.0.1.

- ``postgres``: a throwaway PostgreSQL cluster (Debian's postgresql, run as user postgres);
- ``pg_server``: `make server` with that cluster as MLflow's backend store, serving artifacts;
- ``pg_study``: a 16-job study run once against ``pg_server`` (the browser tests read it too);
- ``cli``: `python experiments/run.py` as a user runs it, timed, output kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.integration.cli import (
    PG_STUDY,
    UI_STUDY,
    CliResult,
    FinishedStudy,
    run_cli,
)
from tests.integration.services import Postgres, TrackingServer, start_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster for the whole session."""
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server(
    postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrackingServer]:
    """`make server` backed by PostgreSQL (database ``mlflow``), for the whole session."""
    server = TrackingServer(
        postgres.create_database("mlflow"), tmp_path_factory.mktemp("pg-server")
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    """`run_cli`, as a fixture."""
    return run_cli


@pytest.fixture(scope="session")
def pg_study(pg_server: TrackingServer, tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    """The 16-job study, run once per session against the PostgreSQL-backed server."""
    workdir = tmp_path_factory.mktemp("pg-study")
    sweep_dir = workdir / "sweep"
    result = run_cli(
        *PG_STUDY,
        "tracking=server",
        f"tracking.uri={pg_server.uri}",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=workdir,
    )
    assert result.returncode == 0, result.output[-5000:]
    return FinishedStudy(pg_server.uri, "mse_vs_ce", sweep_dir, result)


@pytest.fixture(scope="session")
def ui_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FinishedStudy]:
    """A tiny two-variant study (models logged) on `make server` with a SQLite store."""
    workdir = tmp_path_factory.mktemp("ui-study")
    server = TrackingServer(f"sqlite:///{workdir / 'mlflow.db'}", workdir / "server")
    server.start()
    sweep_dir = workdir / "sweep"
    result = run_cli(
        *UI_STUDY,
        "tracking=server",
        f"tracking.uri={server.uri}",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=workdir,
    )
    try:
        assert result.returncode == 0, result.output[-5000:]
        yield FinishedStudy(server.uri, "binary_vs_categorical", sweep_dir, result)
    finally:
        server.stop()
