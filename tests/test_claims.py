"""The claims ledger: its rules on constructed inputs, real values of the exact claims, studies
from the MLflow store (and what happens to failed or incomplete ones), and the ledger end to end.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.test_studies import run_study
from xent_tf import claims, semantics, tracking
from xent_tf.comparison import CONTRADICTED, HOLDS, INCONCLUSIVE, RunRecord
from xent_tf.config import Config

LEDGER_TINY = [
    "+experiment=claims",
    "tracking.log_model=false",
    "data.n_samples=300",
    "data.n_test=60",
]


# --- rules on constructed inputs ---------------------------------------------------------


def test_band_and_threshold_rules_reach_all_three_verdicts() -> None:
    assert claims.band(0.005, 0.01, 0.05, "drop").verdict == HOLDS
    assert claims.band(0.03, 0.01, 0.05, "drop").verdict == INCONCLUSIVE
    assert claims.band(0.2, 0.01, 0.05, "drop").verdict == CONTRADICTED
    assert claims.band(math.nan, 0.01, 0.05, "drop").verdict == INCONCLUSIVE
    assert "holds if <= 0.01, contradicted if >= 0.05" in claims.band(0, 0.01, 0.05, "x").rule
    with pytest.raises(ValueError, match=r"holds_at_most < contradicted_from; got 0\.5 and 0\.1"):
        claims.band(0.0, 0.5, 0.1, "x")
    assert claims.close_to(0.3567, 0.36, 0.005, "x").verdict == HOLDS
    assert claims.close_to(0.6931, 0.0, 0.005, "x").verdict == CONTRADICTED
    assert claims.at_most(math.inf, 1.0, "x").verdict == INCONCLUSIVE
    assert claims.one_match(["a"], ["a", "b"]).verdict == HOLDS
    assert claims.one_match([], ["a", "b"]).verdict == CONTRADICTED
    assert claims.one_match(["a", "b"], ["a", "b"]).verdict == INCONCLUSIVE


def _gradients(n_changed: int = 0) -> semantics.AccuracyGradients:
    return semantics.AccuracyGradients(
        accuracy=0.5,
        loss=0.7,
        weight_names=("hidden/kernel", "head/kernel"),
        accuracy_gradient_is_none=(True, True),
        sign_accuracy_gradient_max_abs=(0.0, 0.0),
        loss_gradient_max_abs=(0.02, 0.05),
        n_perturbations=20,
        perturbation=1e-4,
        perturbations_changing_accuracy=n_changed,
    )


def _outcome(activation: str, before: float, after: float) -> semantics.TrainingOutcome:
    return semantics.TrainingOutcome(activation, before, after, 0.6, 0.7, True, 0.0, 1.0)


@pytest.mark.parametrize(
    ("step_loss_after", "n_changed", "verdict"),
    [
        (0.699, 0, HOLDS),
        (0.68, 0, INCONCLUSIVE),
        (0.56, 0, CONTRADICTED),
        (0.699, 15, CONTRADICTED),
    ],
)
def test_c11_verdict_follows_the_measured_step_loss(
    step_loss_after: float, n_changed: int, verdict: str
) -> None:
    result = claims.evaluate_c11(
        _gradients(n_changed),
        {"step": _outcome("step", 0.7, step_loss_after), "sigmoid": _outcome("sigmoid", 0.7, 0.4)},
    )
    assert result.verdict == verdict
    moved = next(p for p in result.parts if p.context == "step net: its loss does not move")
    assert "relative drop" in moved.verdict.rule and "0.01" in moved.verdict.rule
    # The plain-language correction appears exactly when the measured loss moved.
    assert any("still learns" in n for n in result.notes) == (step_loss_after < 0.66)


def _reference(test_acc: float, final_val: float) -> claims.ReferenceOutcome:
    return claims.ReferenceOutcome(
        split=(6300, 2700, 1000),
        train_loss=(0.6, 0.3, 0.12),
        val_loss=(0.55, 0.3, final_val),
        test_loss=0.12,
        test_acc=test_acc,
        run_id="-",
        experiment_id="-",
        source="constructed",
    )


def test_c16_rules_reach_each_verdict() -> None:
    assert claims.evaluate_c16(_reference(0.96, 0.13)).verdict == HOLDS
    assert claims.evaluate_c16(_reference(0.96, 0.22)).verdict == INCONCLUSIVE  # gap 0.10
    low = claims.evaluate_c16(_reference(0.60, 0.13))
    assert low.verdict == CONTRADICTED
    assert "test accuracy: holds if >= 0.9" in low.parts[-1].verdict.rule


def test_c10_constructed_scales() -> None:
    bounded = claims.LossScale("binary", 2, math.log(2), 1.0, 1.0, 0.1, 0.9, 0.95, 100, 20)
    assert claims.evaluate_c10([bounded]).verdict == HOLDS
    unbounded = claims.LossScale("binary", 2, math.log(2), 0.69, 5.6, 0.12, 13.5, 0.96, 100, 20)
    result = claims.evaluate_c10([unbounded])
    assert result.verdict == CONTRADICTED
    assert any("not bounded by 1" in n and "13.50" in n for n in result.notes)


def test_study_claim_combines_checks_and_exact_parts() -> None:
    from xent_tf.studies import ClaimCheck

    parent = tracking.StudyRun("abcdef123456", "7", "mse_vs_ce", "mse_vs_ce", "FINISHED", 0)
    checks = (
        ClaimCheck("C12", "faster", HOLDS, "rule a"),
        ClaimCheck("C12b", "saturated", INCONCLUSIVE, "rule b"),
        ClaimCheck("C1", "not this one", CONTRADICTED, "rule c"),
    )
    evidence = claims.StudyEvidence("mse_vs_ce", checks, parent, n_seeds=5, n_runs=80)
    result = claims.evaluate_study_claim("C12", evidence)
    assert result.verdict == INCONCLUSIVE
    assert (
        "C12 holds; C12b inconclusive" in result.measured and "5 seeds, 80 runs" in result.measured
    )
    assert result.links[0].url.endswith("/#/experiments/7/runs/abcdef123456/model-metrics")
    missing = claims.evaluate_study_claim("C13", claims.StudyEvidence("lr_sweep", problem="gone"))
    assert missing.verdict == INCONCLUSIVE and "gone" in missing.parts[0].verdict.measured


# --- exact claims: real numbers ----------------------------------------------------------


def test_c1_c2_numbers_and_the_fair_coin() -> None:
    c1 = claims.evaluate_c1(claims.measure_c1())
    assert c1.verdict == HOLDS
    assert "-ln 0.7 = 0.3567, -ln 0.2 = 1.6094, -ln 0.1 = 2.3026, -ln 1 = 0.0000" in c1.measured
    m = claims.measure_c2()
    assert m.example_nats == pytest.approx(0.801819, abs=1e-6)
    assert m.fair_coin_bits == pytest.approx(1.0) and m.fair_coin_nats == pytest.approx(0.693147)
    assert m.max_binary_bits == pytest.approx(1.0) and m.argmax_binary_p == 0.5
    c2 = claims.evaluate_c2(m)
    assert c2.verdict == CONTRADICTED
    verdicts = {p.context: p.verdict.verdict for p in c2.parts}
    assert verdicts == {
        "H(0.7, 0.2, 0.1) is about 0.80 nats": HOLDS,
        "entropy is the expected self-information": HOLDS,
        "a fair coin's entropy is 0": CONTRADICTED,
    }
    assert c2.notes[0].startswith("Wrong as stated: a fair coin has H = 1.000 bit = 0.693 nats")


def test_c3_c4_identities_and_code_lengths() -> None:
    c3 = claims.measure_c3(n_pairs=500)
    assert c3.max_identity_error < 1e-12 and c3.max_kl_self == 0.0 and c3.min_kl > 0
    assert c3.argmin_ce == c3.argmin_kl == c3.argmin_nll
    assert claims.evaluate_c3(c3).verdict == HOLDS
    assert claims.prefix_code([0.125, 0.125, 0.25, 0.5]) == ("110", "111", "10", "0")
    with pytest.raises(ValueError, match="not dyadic"):
        claims.prefix_code([0.3, 0.7])
    c4 = claims.measure_c4(n_events=20_000)
    assert c4.cross_entropy_bits == 2.625 and c4.entropy_bits == 1.75
    assert c4.decoding_errors == 0
    assert abs(c4.bits_per_event - 2.625) < 4 * c4.standard_error
    assert claims.evaluate_c4(c4).verdict == HOLDS


def test_c5_c7_c9_from_the_keras_losses() -> None:
    c5 = claims.evaluate_c5(semantics.worked_example())
    assert c5.verdict == HOLDS and "Keras CCE 2.302585, 2.302585" in c5.measured
    c7 = claims.evaluate_c7(
        semantics.logits_vs_log_softmax(), semantics.weighted_reduction_semantics()
    )
    assert c7.verdict == HOLDS
    assert "Keras mean 10.9143 divides by the number of non-ignored samples" in c7.measured
    assert "PyTorch mean 3.0558" in c7.measured
    c9 = claims.evaluate_c9(semantics.clipping_effect())
    assert c9.verdict == HOLDS and "z=-50: clipped 16.12 (grad 0), logits 50.00" in c9.measured


# --- config ------------------------------------------------------------------------------


def test_unknown_claim_id_names_it_and_lists_the_known_ones(
    make_config: Callable[..., Config],
) -> None:
    with pytest.raises(ValueError, match=r"unknown claim\(s\) \['C99'\]; known: C1, C2, .*C16"):
        make_config("+experiment=claims", "claims.only=[C2,C99]")
    with pytest.raises(ValueError, match=r"claims\.seeds=1 must be >= 2"):
        make_config("+experiment=claims", "claims.seeds=1")
    with pytest.raises(ValueError, match="task='study' is not one of"):
        make_config("task=study")
    config = make_config("+experiment=claims", "claims.only=[c10]")
    assert (config.task, config.experiment_name, config.claims.only) == (
        "claims",
        "claims",
        ["C10"],
    )


# --- studies in the store ----------------------------------------------------------------


def _parent(client: MlflowClient, experiment_id: str, study: str, status: str) -> str:
    run = client.create_run(
        experiment_id, tags={"xent.sweep_dir": "/tmp/x", tracking.STUDY_TAG: study}
    )
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def _child(
    client: MlflowClient,
    experiment_id: str,
    parent: str,
    lr: str,
    seed: int,
    status: str,
    error: str,
) -> None:
    run = client.create_run(
        experiment_id,
        tags={
            "mlflow.parentRunId": parent,
            "seed": str(seed),
            **({"error": error} if error else {}),
        },
    )
    client.log_param(run.info.run_id, "optimizer.learning_rate", lr)
    client.set_terminated(run.info.run_id, status)


def test_failed_or_incomplete_studies_are_named_and_not_used(
    tracking_uri: str, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("lr_sweep")
    crashed = _parent(client, experiment_id, "lr_sweep", "FINISHED")
    for seed in (0, 1):
        _child(client, experiment_id, crashed, "0.1", seed, "FINISHED", "")
    _child(client, experiment_id, crashed, "10.0", 0, "FAILED", "RuntimeError: disk on fire")
    gap = _parent(client, experiment_id, "lr_sweep", "FINISHED")
    for lr, seeds in (("0.1", (0, 1)), ("10.0", (0,))):
        for seed in seeds:
            error = "NonFiniteLossError: training loss became NaN/inf" if lr == "10.0" else ""
            _child(client, experiment_id, gap, lr, seed, "FAILED" if error else "FINISHED", error)
    _parent(client, experiment_id, "lr_sweep", "FAILED")
    _parent(client, experiment_id, "lr_sweep", "RUNNING")

    calls: list[tuple[str, int]] = []

    def runner_that_records(study: str, seeds: int, uri: str) -> None:
        calls.append((study, seeds))  # ... and leaves nothing in the store

    for runner in (None, runner_that_records):
        evidence = claims.find_study("lr_sweep", tracking_uri, tmp_path, 3, False, runner)
        assert evidence.checks == () and evidence.parent is None
        skipped = "\n".join(evidence.skipped)
        assert "parent run still RUNNING" in skipped
        assert "parent run ended FAILED" in skipped
        # a diverged child is a measured outcome; the missing seed is what makes it incomplete
        assert f"{gap[:8]} not used: incomplete: variant 'learning_rate=10.0' lacks seeds [1]" in (
            skipped
        )
        assert f"{crashed[:8]} not used: 1 of 3 child runs FAILED (first: RuntimeError: disk" in (
            skipped
        )
        result = claims.evaluate_study_claim("C13", evidence)
        assert result.verdict == INCONCLUSIVE and len(result.notes) == 4
    assert (
        "running studies is switched off"
        in claims.find_study("lr_sweep", tracking_uri, tmp_path, 3, False, None).problem
    )
    assert calls == [("lr_sweep", 3)]
    assert evidence.problem == "running it left no new sweep in the store"


def test_study_problem_accepts_diverged_runs() -> None:
    parent = tracking.StudyRun("p", "1", "lr_sweep", "lr_sweep", "FINISHED", 0)

    def record(lr: str, seed: int, status: str = "FINISHED", error: str | None = None) -> RunRecord:
        return RunRecord("r", {"optimizer.learning_rate": lr}, seed, status, error=error)

    diverged = "NonFiniteLossError: training loss became NaN/inf at epoch 2"
    records = [record("0.1", 0), record("0.1", 1), record("10", 0, "FAILED", diverged)]
    records.append(record("10", 1, "FAILED", diverged))
    assert claims.study_problem(parent, "lr_sweep", records) == ""
    assert "tagged study 'annealing'" in claims.study_problem(
        tracking.StudyRun("p", "1", "lr_sweep", "annealing", "FINISHED", 0), "lr_sweep", records
    )
    assert claims.study_problem(parent, "lr_sweep", []) == "no child runs"


# --- end to end --------------------------------------------------------------------------


def test_ledger_end_to_end_runs_missing_studies_then_reuses_the_store(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    calls: list[tuple[str, int]] = []

    def tiny_runner(study: str, seeds: int, uri: str) -> None:
        calls.append((study, seeds))
        run_study(study, list(range(seeds)), uri, tmp_path / f"sweep-{study}-{len(calls)}")

    config = make_config(
        *LEDGER_TINY,
        f"tracking.uri={tracking_uri}",
        "claims.only=[C1,C2,C5,C8,C13,C16]",
        "claims.seeds=2",
    )
    ledger, text = claims.run_ledger(config, tmp_path / "out", runner=tiny_runner)
    assert calls == [("binary_vs_categorical", 2), ("lr_sweep", 2)]
    by_id = {r.claim: r for r in ledger.results}
    assert list(by_id) == ["C1", "C2", "C5", "C8", "C13", "C16"]
    assert (by_id["C1"].verdict, by_id["C2"].verdict, by_id["C5"].verdict) == (
        HOLDS,
        CONTRADICTED,
        HOLDS,
    )
    assert "fair coin H = 1.0000 bit = 0.6931 nats" in by_id["C2"].measured
    # C8: two exact parts (float32/64) plus the tiny study's checks, linked to its sweep
    c8 = by_id["C8"]
    assert [p.verdict.verdict for p in c8.parts[:2]] == [HOLDS, HOLDS]
    assert "run by this ledger; 2 seeds, 10 runs" in c8.measured
    study = {s.study: s for s in ledger.studies}["binary_vs_categorical"]
    assert study.parent is not None and study.ran_now
    assert c8.links[0].url == tracking.run_url(study.parent.experiment_id, study.parent.run_id)
    # its exact parts were measured in the ledger run, so that run is linked too
    assert ledger.links(c8)[-1].url == ledger.run_url and "exact parts" in c8.source
    assert c8.verdict in (HOLDS, CONTRADICTED, INCONCLUSIVE)
    assert any(p.context.startswith("[C13]") for p in by_id["C13"].parts)
    c16 = by_id["C16"]
    assert c16.source.startswith("reference run made by this ledger")
    # the tiny config is not the reference split: the rule says so
    assert c16.parts[0].verdict.verdict == CONTRADICTED and "split (168, 72, 60)" in c16.measured
    assert "C2 " in text and "CONTRADICTED" in text and "run with 2 seeds" in text

    client = MlflowClient(tracking_uri)
    run = client.get_run(ledger.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "claims"
    assert run.data.tags["verdict.C2"] == CONTRADICTED and run.data.tags["verdict.C1"] == HOLDS
    assert {a.path for a in client.list_artifacts(ledger.run_id)} >= {
        "claims.md",
        "claims.html",
        "claims.json",
    }
    data = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert [c["claim"] for c in data["claims"]] == list(by_id)
    assert data["claims"][0]["links"][0]["url"] == ledger.run_url  # computed here -> this run
    page = (tmp_path / "out" / "claims.html").read_text()
    assert f'href="{c8.links[0].url}"' in page and "class='contradicted'" in page
    markdown = (tmp_path / "out" / "claims.md").read_text()
    assert "| claim | what the tutorial says | what was measured | verdict | rule | from |" in (
        markdown
    )

    # A newer failed sweep in the store is named and skipped; the complete one is reused, and
    # C16 now comes from the reference run the first ledger recorded.
    experiment_id = client.get_experiment_by_name("lr_sweep").experiment_id  # type: ignore[union-attr]
    failed = _parent(client, experiment_id, "lr_sweep", "FAILED")

    def must_not_run(study: str, seeds: int, uri: str) -> None:
        raise AssertionError(f"{study} should come from the store")

    config = make_config(*LEDGER_TINY, f"tracking.uri={tracking_uri}", "claims.only=[C13,C16]")
    again, _ = claims.run_ledger(config, tmp_path / "again", runner=must_not_run)
    c13, c16_again = again.results
    assert f"sweep {failed[:8]} not used: parent run ended FAILED" in c13.notes
    assert "latest finished study in the store" in c13.measured
    assert c16_again.source.startswith("latest finished reference run in the store")
    assert (
        c16_again.links[0].url.split("/runs/")[1].split("/")[0]
        == c16.links[0].url.split("/runs/")[1].split("/")[0]
    )
