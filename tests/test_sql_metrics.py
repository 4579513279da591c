"""sql_metrics writes what MLflow's own log_batch writes (read back through MLflow's client)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from xent_tf.track import sql_metrics
from xent_tf.track.artifacts import send_metrics

T = 1_700_000_000_000


def _batches() -> list[list[Metric]]:
    """Two deliveries of one run: NaN, +-inf, a value repeated exactly, a key logged twice at
    one step, and a second batch whose older step must not become the latest."""
    first = [Metric("loss", 1.0 / (s + 1), T + s, s) for s in range(20)]
    first += [Metric("acc", 0.5 + s / 100, T + s, s) for s in range(20)]
    first += [
        Metric("loss", 1.0 / 20, T + 19, 19),  # an exact repeat: stored once
        Metric("odd", math.nan, T, 0),
        Metric("odd", math.inf, T + 1, 1),
        Metric("odd", -math.inf, T + 2, 2),
        Metric("same_step", 3.0, T + 5, 5),
        Metric("same_step", 2.0, T + 6, 5),  # same step, later timestamp: the latest
    ]
    second = [
        Metric("loss", 7.0, T + 100, 3),  # an older step: history only
        Metric("acc", 0.99, T + 100, 25),  # a newer step: the latest
        Metric("late", 1.5, T + 100, 0),
    ]
    return [first, second]


def _read(client: MlflowClient, run_id: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    run = client.get_run(run_id)
    histories = {
        key: sorted(
            (m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
            for m in client.get_metric_history(run_id, key)
        )
        for key in run.data.metrics
    }
    latest = {k: "nan" if math.isnan(v) else v for k, v in run.data.metrics.items()}
    return histories, latest


def test_fast_metrics_read_back_exactly_as_log_batch_writes_them(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.create_experiment("e")
    by_mlflow = client.create_run(experiment).info.run_id
    by_us = client.create_run(experiment).info.run_id
    store = sql_metrics.fast_store(client)
    assert store is not None
    for batch in _batches():
        client.log_batch(by_mlflow, metrics=batch)
        assert sql_metrics.log_metrics(store, by_us, batch) is True
    histories, latest = _read(client, by_us)
    assert (histories, latest) == _read(client, by_mlflow)
    assert len(histories["loss"]) == 21  # 20 + the older step of the second batch
    assert latest["acc"] == 0.99 and latest["same_step"] == 2.0 and latest["loss"] == 1.0 / 20
    assert latest["odd"] == -1.7976931348623157e308  # -inf, stored as MLflow stores it
    assert histories["odd"][0][2] == "nan"


def test_a_repeated_delivery_falls_back_to_log_batch_and_a_deleted_run_is_refused(
    tmp_path: Path,
) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.create_experiment("e")
    run_id = client.create_run(experiment).info.run_id
    store = sql_metrics.fast_store(client)
    batch = _batches()[0]
    send_metrics(client, run_id, batch)
    assert sql_metrics.log_metrics(store, run_id, batch[:3]) is False  # already there
    send_metrics(client, run_id, batch)  # log_batch drops the repeats
    assert len(client.get_metric_history(run_id, "loss")) == 20
    client.delete_run(run_id)
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        sql_metrics.log_metrics(store, run_id, [Metric("x", 1.0, T, 0)])


def test_only_a_local_database_store_takes_the_fast_path(tmp_path: Path) -> None:
    assert sql_metrics.fast_store(MlflowClient("http://127.0.0.1:9")) is None  # a server
    assert sql_metrics.fast_store(MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")) is not None
    linked = [Metric("x", 1.0, T, 0, model_id="m-1")]
    store = sql_metrics.fast_store(MlflowClient(f"sqlite:///{tmp_path / 'm.db'}"))
    assert sql_metrics.log_metrics(store, "any", linked) is False  # MLflow's model tables


def test_fast_params_read_back_as_log_batch_writes_them_and_a_change_is_refused(
    tmp_path: Path,
) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.create_experiment("e")
    by_mlflow, by_us = (client.create_run(experiment).info.run_id for _ in range(2))
    store = sql_metrics.fast_store(client)
    params = [Param(f"p{i}", "x" * i) for i in range(60)] + [Param("long", "v" * 6000)]
    client.log_batch(by_mlflow, params=params[:50])
    client.log_batch(by_mlflow, params=params[50:])
    sql_metrics.log_params(store, by_us, params)
    sql_metrics.log_params(store, by_us, params[:3])  # the same values again: allowed
    assert client.get_run(by_us).data.params == client.get_run(by_mlflow).data.params
    assert len(client.get_run(by_us).data.params) == 61
    with pytest.raises(MlflowException, match=r"Changing param values is not allowed.*'p1'"):
        sql_metrics.log_params(store, by_us, [Param("p1", "changed"), Param("new", "1")])
    assert "new" not in client.get_run(by_us).data.params  # nothing of the refused batch
    huge = [Param("huge", "v" * 9000)]  # MLflow keeps its first 6000 characters
    client.log_batch(by_mlflow, params=huge)
    sql_metrics.log_params(store, by_us, huge)
    assert client.get_run(by_us).data.params == client.get_run(by_mlflow).data.params
    assert len(client.get_run(by_us).data.params["huge"]) == 6000


@pytest.mark.parametrize(
    "late",
    [
        Metric("x", 2.0, T, 1),  # fine
        Metric("x", np.float64(2.0), T, 1),  # fine, through MLflow's check
        Metric("x", 2, T, 1),  # an int value: fine
        Metric("x", True, T, 1),  # a bool: refused
        Metric("x", None, T, 1),  # missing
        Metric("x", 2.0, -1, 1),  # a negative timestamp
        Metric("x", 2.0, T, "1"),  # a text step
        Metric("bad\tx", 2.0, T, 1),  # a bad name
    ],
)
def test_metrics_are_checked_as_mlflow_checks_each_one(late: Metric) -> None:
    """A key's later values skip the name check only: each refusal is MLflow's own, naming
    the value's index."""
    from mlflow.utils.validation import _validate_metric

    metrics = [Metric("x", 1.0, T, 0), Metric("y", 1.0, T, 0), late]
    expected = None
    try:
        for i, m in enumerate(metrics):
            _validate_metric(m.key, m.value, m.timestamp, m.step, path=f"metrics[{i}]")
    except MlflowException as error:
        expected = error.message
    if expected is None:
        sql_metrics.check_metrics(metrics)
    else:
        assert "metrics[2]" in expected
        with pytest.raises(MlflowException) as raised:
            sql_metrics.check_metrics(metrics)
        assert raised.value.message == expected
