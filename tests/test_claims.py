"""The claims ledger: its rules on constructed inputs, real values of the exact claims, studies
from the MLflow store (failed, incomplete or differently configured ones are refused), the
stability mode, and the ledger end to end.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from tests.conftest import require_torch
from tests.test_studies import TINY_STUDY, run_study, tiny_overrides
from xent_tf.claims import (
    from_studies,
    gradients,
    information,
    ledger,
    loss_functions,
    loss_scale,
    protocol,
    reference,
    registry,
    semantics,
)
from xent_tf.claims.comparison import Finding, Verdict
from xent_tf.claims.records import ClaimResult, StudyEvidence
from xent_tf.claims.runner import DEFINING_PARAMS, StudyDefinition, define_study
from xent_tf.claims.studies import ClaimCheck, ClaimPart
from xent_tf.config import CLAIM_IDS, Config, MakeClassificationConfig
from xent_tf.track import connection, reading
from xent_tf.track.resume import definition_differences
from xent_tf.track.run_record import (
    RunRecord,
    RunStatus,
    divergence_tags,
    no_suggestion_of,
    no_suggestion_tags,
)

HOLDS, CONTRADICTED, INCONCLUSIVE = Verdict.HOLDS, Verdict.CONTRADICTED, Verdict.INCONCLUSIVE
ROOT = Path(__file__).resolve().parent.parent

LEDGER_TINY = [
    "+experiment=claims",
    "tracking.log_model=false",
    "data.n_samples=300",
    "data.n_test=60",
]


# --- rules on constructed inputs ---------------------------------------------------------


def test_registry_is_the_one_place_statements_are_written() -> None:
    assert tuple(registry.CLAIMS) == CLAIM_IDS
    assert (ROOT / "docs" / "CLAIMS.md").read_text() == registry.render_claims_markdown()
    for claim in registry.CLAIMS.values():
        assert claim.statement and claim.measured_by and claim.judged_by
    assert {c.study for c in registry.CLAIMS.values() if c.study} == {
        "binary_vs_categorical",
        "mse_vs_ce",
        "lr_sweep",
        "annealing",
        "reference",
    }
    with pytest.raises(ValueError, match="claim 'C99' is not one of C1, C2"):
        registry.get_claim("C99")


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


def _outcome(
    activation: str, before: float, after: float, probes_changed: int = 0
) -> semantics.TrainingOutcome:
    return semantics.TrainingOutcome(
        activation, before, after, 0.6, 0.7, True, 0.0, 1.0, 20, probes_changed, 1e-4
    )


@pytest.mark.parametrize(
    ("step_loss_after", "n_changed", "step_probes_changed", "verdict"),
    [
        (0.699, 0, 0, HOLDS),
        (0.68, 0, 0, INCONCLUSIVE),
        (0.699, 5, 0, INCONCLUSIVE),  # accuracy changed under 25% of the probes
        (0.56, 0, 0, CONTRADICTED),
        (0.699, 15, 0, CONTRADICTED),
        (0.699, 0, 20, CONTRADICTED),  # the step net's loss depends on its hidden weights
    ],
)
def test_c11_verdict_follows_the_measurements(
    step_loss_after: float, n_changed: int, step_probes_changed: int, verdict: str
) -> None:
    result = gradients.evaluate_c11(
        _gradients(n_changed),
        {
            "step": _outcome("step", 0.7, step_loss_after, step_probes_changed),
            "sigmoid": _outcome("sigmoid", 0.7, 0.4, 20),
        },
    )
    assert result.verdict == verdict
    moved = next(
        p for p in result.parts if p.context == "step net: its loss does not move in training"
    )
    assert "relative drop" in moved.verdict.rule and "0.01" in moved.verdict.rule
    # The plain-language correction appears exactly when the measured loss moved.
    assert any("still learns" in n for n in result.notes) == (step_loss_after < 0.66)


def _reference(test_acc: float, final_val: float) -> reference.ReferenceOutcome:
    return reference.ReferenceOutcome(
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
    assert reference.evaluate_c16(_reference(0.96, 0.13)).verdict == HOLDS
    assert reference.evaluate_c16(_reference(0.96, 0.22)).verdict == INCONCLUSIVE  # gap 0.10
    low = reference.evaluate_c16(_reference(0.60, 0.13))
    assert low.verdict == CONTRADICTED
    assert "test accuracy: holds if >= 0.9" in low.parts[-1].verdict.rule


def _scale(
    n_classes: int, untrained_mean: float, curve: tuple[tuple[float, float], ...]
) -> loss_scale.LossScale:
    return loss_scale.LossScale(
        data=f"{n_classes}-class",
        n_classes=n_classes,
        chance_loss=math.log(n_classes),
        untrained_mean=untrained_mean,
        untrained_max=3.0,
        trained_mean=curve[-1][0],
        trained_max=13.5,
        trained_accuracy=curve[-1][1],
        n_rows=100,
        epochs=len(curve) - 1,
        chance_accuracy=1 / n_classes,
        val_curve=curve,
    )


def test_c10_is_judged_on_mean_losses() -> None:
    # a poor model near 1 whose accuracy at loss 1 is near chance: the statement holds
    poor_at_one = _scale(5, 1.05, ((1.05, 0.2), (0.98, 0.25), (0.6, 0.8)))
    assert poor_at_one.accuracy_at_loss(1.0) == pytest.approx(0.2 + 0.05 * 0.05 / 0.07)
    assert loss_scale.evaluate_c10([poor_at_one]).verdict == HOLDS
    # chance level ln 5 = 1.61, and a model at loss 1 is far above chance: contradicted
    five = _scale(5, 1.61, ((1.61, 0.2), (1.2, 0.45), (0.9, 0.65), (0.75, 0.72)))
    result = loss_scale.evaluate_c10([five])
    assert result.verdict == CONTRADICTED
    assert any("no fixed 'poor' value" in n for n in result.notes)
    # the per-sample maximum is supporting detail, never a part
    assert any("not bounded by 1" in n and "13.50" in n for n in result.notes)
    assert not any("per-sample" in p.context for p in result.parts)
    # binary: the loss never passes 1, so "a model at 1 is poor" cannot be measured
    binary = _scale(2, 0.95, ((0.95, 0.5), (0.4, 0.85), (0.2, 0.95)))
    assert loss_scale.evaluate_c10([binary]).verdict == INCONCLUSIVE


def test_study_claim_combines_checks_and_exact_parts() -> None:
    parent = reading.StudyRun("abcdef123456", "7", "mse_vs_ce", "mse_vs_ce", "FINISHED", 0)
    checks = (
        _check("C12", HOLDS),
        _check("C12b", INCONCLUSIVE),
        _check("C1", CONTRADICTED),
    )
    evidence = StudyEvidence(
        "mse_vs_ce",
        checks,
        parent,
        n_seeds=5,
        n_runs=80,
        seeds=(0, 1, 2, 3, 4),
        config_hash="0123456789",
        date="2026-12-01 10:00",
    )
    result = from_studies.evaluate_study_claim("C12", evidence)
    assert result.verdict == INCONCLUSIVE
    assert "C12 holds; C12b inconclusive" in result.measured
    assert "2026-12-01 10:00; config 0123456789; seeds 0-4, 80 runs" in result.measured
    assert result.links[0].url.endswith("/#/experiments/7/runs/abcdef123456/model-metrics")
    missing = from_studies.evaluate_study_claim("C13", StudyEvidence("lr_sweep", problem="gone"))
    assert missing.verdict == INCONCLUSIVE and "gone" in missing.parts[0].verdict.measured


def test_a_study_claim_is_corrected_over_the_parts_of_all_its_checks() -> None:
    """C12 and C12b each contradicted on its own (one-sided p = 0.02 <= 0.025); as one claim
    of two statistical parts, Holm's first step needs 0.0125: the row is inconclusive."""

    def against(claim: str, p: float) -> ClaimCheck:
        finding = Finding(CONTRADICTED, "rule", "measured", 0.9, p)
        return ClaimCheck(claim, "s", CONTRADICTED, "rule", [ClaimPart("part", finding)])

    evidence = StudyEvidence("mse_vs_ce", (against("C12", 0.02), against("C12b", 0.02)))
    result = from_studies.evaluate_study_claim("C12", evidence)
    assert result.verdict == INCONCLUSIVE
    counted = [p for p in result.parts if p.counted]
    assert [p.verdict.verdict for p in counted] == [INCONCLUSIVE, INCONCLUSIVE]
    assert [p.verdict.own_verdict for p in counted] == [CONTRADICTED, CONTRADICTED]
    # the summary rows are shown, not counted
    assert [p.context for p in result.parts if not p.counted] == [
        "[C12 overall] s",
        "[C12b overall] s",
    ]
    strong = StudyEvidence("mse_vs_ce", (against("C12", 0.001), against("C12b", 0.02)))
    assert from_studies.evaluate_study_claim("C12", strong).verdict == CONTRADICTED


# --- exact claims: real numbers ----------------------------------------------------------


def test_c1_c2_numbers_and_the_fair_coin() -> None:
    c1 = information.evaluate_c1(information.measure_c1())
    assert c1.verdict == HOLDS
    assert "-ln 0.7 = 0.3567, -ln 0.2 = 1.6094, -ln 0.1 = 2.3026, -ln 1 = 0.0000" in c1.measured
    m = information.measure_c2()
    assert m.example_nats == pytest.approx(0.801819, abs=1e-6)
    assert m.fair_coin_bits == pytest.approx(1.0) and m.fair_coin_nats == pytest.approx(0.693147)
    assert m.max_binary_bits == pytest.approx(1.0) and m.argmax_binary_p == 0.5
    c2 = information.evaluate_c2(m)
    assert c2.verdict == CONTRADICTED
    verdicts = {p.context: p.verdict.verdict for p in c2.parts}
    assert verdicts == {
        "H(0.7, 0.2, 0.1) is about 0.80 nats": HOLDS,
        "entropy is the expected self-information": HOLDS,
        "a fair coin's entropy is 0": CONTRADICTED,
    }
    assert c2.notes[0].startswith("Wrong as stated: a fair coin has H = 1.000 bit = 0.693 nats")


def test_c3_three_objectives_fitted_on_real_data_find_the_same_model() -> None:
    kl = information.measure_kl(n_pairs=500)
    assert kl.max_identity_error < 1e-12 and kl.max_kl_self == 0.0 and kl.min_kl > 0
    fits = information.fit_objectives(MakeClassificationConfig(name="multiclass", n_classes=5))
    assert (fits.n_rows, fits.n_cells, fits.n_classes) == (6300, 36, 5)
    assert fits.max_difference("cross_entropy", "likelihood") < 1e-6
    assert fits.max_difference("cross_entropy", "kl") < 1e-6
    # the control: another objective finds a clearly different model, so agreement means something
    assert fits.max_difference("cross_entropy", "brier") == pytest.approx(0.0767, abs=2e-3)
    result = information.evaluate_c3(kl, fits)
    assert result.verdict == HOLDS and "control: a Brier fit differs by 0.077" in result.measured
    # a fit that found a different model contradicts the claim
    moved = dict(fits.probabilities)
    moved["kl"] = fits.probabilities["brier"]
    broken = information.FittedObjectives(
        fits.n_rows,
        fits.n_cells,
        fits.n_classes,
        moved,
        fits.objective_at_fit,
        fits.conditional_entropy,
    )
    assert information.evaluate_c3(kl, broken).verdict == CONTRADICTED


def test_c4_code_lengths() -> None:
    assert information.prefix_code([0.125, 0.125, 0.25, 0.5]) == ("110", "111", "10", "0")
    with pytest.raises(ValueError, match="not dyadic"):
        information.prefix_code([0.3, 0.7])
    c4 = information.measure_c4(n_events=20_000)
    assert c4.cross_entropy_bits == 2.625 and c4.entropy_bits == 1.75
    assert c4.decoding_errors == 0
    assert abs(c4.bits_per_event - 2.625) < 4 * c4.standard_error
    assert information.evaluate_c4(c4).verdict == HOLDS


def test_c4_on_a_non_dyadic_q_the_shannon_code_is_within_one_bit_of_the_cross_entropy() -> None:
    # ceil(-log2 q) for q = (0.1, 0.2, 0.3, 0.4): 3.32 -> 4, 2.32 -> 3, 1.74 -> 2, 1.32 -> 2
    assert information.shannon_lengths([0.1, 0.2, 0.3, 0.4]) == (4, 3, 2, 2)
    assert information.shannon_lengths([0.5, 0.25, 0.125, 0.125]) == (1, 2, 3, 3)  # dyadic
    code = information.canonical_code((4, 3, 2, 2))
    assert code == ("1010", "100", "00", "01")
    assert not any(a != b and b.startswith(a) for a in code for b in code)  # prefix-free
    with pytest.raises(ValueError, match=r"word lengths \[1, 1, 2\] break Kraft's inequality"):
        information.canonical_code([1, 1, 2])
    c4 = information.measure_c4(n_events=20_000)
    shannon = c4.shannon
    assert shannon is not None and shannon.p == (0.4, 0.3, 0.2, 0.1)
    # 0.4 x 4 + 0.3 x 3 + 0.2 x 2 + 0.1 x 2 = 3.1 bits; H_2(p, q) from its definition
    assert shannon.mean_length == pytest.approx(3.1, abs=1e-12)
    p, q = np.array(shannon.p), np.array(shannon.q)
    assert shannon.cross_entropy_bits == pytest.approx(-(p * np.log2(q)).sum(), abs=1e-12)
    assert shannon.cross_entropy_bits == pytest.approx(2.5049356, abs=1e-7)
    assert shannon.decoding_errors == 0
    assert abs(shannon.bits_per_event - 3.1) < 4 * shannon.standard_error
    bound = next(p for p in information.evaluate_c4(c4).parts if "H_2(p, q) + 1" in p.context)
    assert bound.verdict.verdict == HOLDS
    # a code one bit longer per word leaves the bound: contradicted
    longer = dataclasses.replace(shannon, mean_length=shannon.mean_length + 1)
    result = information.evaluate_c4(dataclasses.replace(c4, shannon=longer))
    assert result.verdict == CONTRADICTED
    # a code shorter than the cross-entropy (impossible for Shannon's lengths) is caught too
    shorter = dataclasses.replace(shannon, mean_length=2.4)
    assert information.evaluate_c4(dataclasses.replace(c4, shannon=shorter)).verdict == (
        CONTRADICTED
    )


def test_c5_c9_from_the_keras_losses() -> None:
    c5 = loss_functions.evaluate_c5(semantics.worked_example())
    assert c5.verdict == HOLDS and "Keras CCE 2.302585, 2.302585" in c5.measured
    c9 = loss_functions.evaluate_c9(semantics.clipping_effect())
    assert c9.verdict == HOLDS and "z=-50: clipped 16.12 (grad 0), logits 50.00" in c9.measured


def test_c7_against_pytorch_itself() -> None:
    require_torch()
    batch = semantics.weighted_reduction_semantics()
    torch_values = semantics.torch_reference(batch)
    assert not isinstance(torch_values, str)
    c7 = loss_functions.evaluate_c7(semantics.logits_vs_log_softmax(), batch, torch_values)
    assert c7.verdict == HOLDS
    assert "Keras mean 10.9143 divides by the number of non-ignored samples" in c7.measured
    assert "mean 3.0558 divides by the sum of the non-ignored samples' weights" in c7.measured
    assert f"PyTorch {torch_values.version}" in c7.measured
    verdicts = {p.context: p.verdict.verdict for p in c7.parts}
    assert verdicts["frameworks differ on the weighted mean"] == HOLDS
    assert verdicts["label smoothing: Keras = PyTorch"] == HOLDS


def test_c7_without_pytorch_measures_nothing_in_its_name() -> None:
    batch = semantics.weighted_reduction_semantics()
    reason = "not measured (PyTorch not installed: No module named 'torch'; make install-reference)"
    c7 = loss_functions.evaluate_c7(semantics.logits_vs_log_softmax(), batch, reason)
    cross = [p for p in c7.parts if "PyTorch" in p.context or "frameworks" in p.context]
    assert len(cross) == 4 and {p.verdict.verdict for p in cross} == {Verdict.NOT_MEASURED}
    keras = [p for p in c7.parts if p not in cross]
    assert keras and {p.verdict.verdict for p in keras} == {HOLDS}
    # The Keras parts hold, but a required part that was not measured is not a pass.
    assert c7.verdict == Verdict.INCONCLUSIVE
    assert "make install-reference" in c7.measured
    assert "PyTorch mean" not in c7.measured and reason in c7.measured


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

PARAMS = {"trainer.epochs": "20", "data.n_samples": "10000"}
# Parents made here record no study definition: they are judged by their runs' params.
DEFINITION = StudyDefinition(sweep={}, params=PARAMS, datasets="")


def _parent(client: MlflowClient, experiment_id: str, study: str, status: str) -> str:
    run = client.create_run(
        experiment_id, tags={"xent.sweep_dir": "/tmp/x", reading.STUDY_TAG: study}
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
    params: dict[str, str] = PARAMS,
    diverged_epoch: int | None = None,
) -> None:
    run = client.create_run(
        experiment_id,
        tags={
            "mlflow.parentRunId": parent,
            "seed": str(seed),
            **({"error": error} if error else {}),
            **(divergence_tags(diverged_epoch, 3) if diverged_epoch else {}),
        },
    )
    client.log_param(run.info.run_id, "optimizer.learning_rate", lr)
    for name, value in {**LR_SWEEP_PARAMS, **params}.items():
        client.log_param(run.info.run_id, name, value)
    client.set_terminated(run.info.run_id, status)


# The params lr_sweep's rules read besides the rate (``StudySpec.needs_params``): a grid run.
LR_SWEEP_PARAMS = {
    "lr_find.use": "given",
    "data.prior_loss": "0.693147",
    "data.majority_share": "0.5000",
    "lr_find.steepest_lr": "0.1",
}


class RecordingRunner:
    """A study runner that records its calls and leaves nothing in the store."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def run(
        self, study: str, seeds: Sequence[int], tracking_uri: str, dataset: str | None = None
    ) -> None:
        self.calls.append((study, tuple(seeds)))

    def definition(self, study: str, dataset: str | None = None) -> StudyDefinition:
        return DEFINITION


def test_failed_incomplete_or_debug_studies_are_named_and_not_used(
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
            status = "FAILED" if error else "FINISHED"
            diverged = 1 if error else None
            _child(client, experiment_id, gap, lr, seed, status, error, diverged_epoch=diverged)
    # A +debug=tiny sweep: complete and finished, but not the study as defined.
    debug = _parent(client, experiment_id, "lr_sweep", "FINISHED")
    for lr in ("0.1", "10.0"):
        for seed in (0, 1):
            tiny = {"trainer.epochs": "2", "data.n_samples": "400"}
            _child(client, experiment_id, debug, lr, seed, "FINISHED", "", tiny)
    _parent(client, experiment_id, "lr_sweep", "FAILED")
    _parent(client, experiment_id, "lr_sweep", "RUNNING")

    recording = RecordingRunner()
    for runner in (None, recording):
        evidence = from_studies.find_study(
            "lr_sweep", tracking_uri, (0, 1), DEFINITION, False, runner
        )
        assert evidence.checks == () and evidence.parent is None
        skipped = "\n".join(evidence.skipped)
        assert "parent run still RUNNING" in skipped
        assert "parent run ended FAILED" in skipped
        assert (
            f"{debug[:8]} not used: config differs from the study's definition: "
            "trainer.epochs=2 (study: 20), data.n_samples=400 (study: 10000)"
        ) in skipped
        # a diverged child is a measured outcome; the missing seed is what makes it incomplete
        incomplete = "incomplete: variant 'use=given learning_rate=10.0' lacks seeds [1]"
        assert f"{gap[:8]} not used: {incomplete}" in skipped
        assert f"{crashed[:8]} not used: 1 of 3 child runs FAILED (first: RuntimeError: disk" in (
            skipped
        )
        result = from_studies.evaluate_study_claim("C13", evidence)
        assert result.verdict == INCONCLUSIVE and len(result.notes) == 5
    assert recording.calls == [("lr_sweep", (0, 1))]
    assert evidence.problem == "running it left no new sweep in the store"
    # the debug sweep is used once the definition it must match is its own
    tiny = StudyDefinition({}, {"trainer.epochs": "2", "data.n_samples": "400"}, "")
    used = from_studies.find_study("lr_sweep", tracking_uri, (0, 1), tiny, False, None)
    assert used.parent is not None and used.parent.run_id == debug
    assert used.seeds == (0, 1) and used.config_hash == from_studies.study_definition_hash(
        "lr_sweep", tiny
    )
    # ... but not for seeds it does not have
    lacking = from_studies.find_study("lr_sweep", tracking_uri, (0, 1, 2), tiny, False, None)
    assert any("lacks required seeds [2] (has [0, 1])" in s for s in lacking.skipped)


def _launching_config(overrides: list[str]):  # type: ignore[no-untyped-def]
    """The config a multirun's launching process composes (what its callback records)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from tests.conftest import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        return hydra.compose_config("config", overrides, run_mode=RunMode.MULTIRUN)


@pytest.mark.parametrize(
    ("study", "dataset", "extra"),
    [("lr_sweep", None, TINY_STUDY), ("mse_vs_ce", "wine", ["+debug=quick"])],
)
def test_the_sweep_a_study_records_is_the_study_the_ledger_defines(
    study: str, dataset: str | None, extra: list[str]
) -> None:
    """The definition the sweep's callback records on its parent (what ``+resume`` compares) is
    the one the ledger composes for the study: seeds, store and launcher do not change it."""
    from xent_tf.claims.runner import study_command
    from xent_tf.launch.callback import _study_definition

    wanted = define_study(study, extra, dataset)
    command = study_command(study, extra, dataset)
    launched = [*command, "seed=0,1,2", "tracking.uri=sqlite:///elsewhere.db", "+resume=matching"]
    assert _study_definition(_launching_config(launched)) == wanted.sweep
    assert _study_definition(_launching_config([*launched, "hydra/launcher=basic"])) == (
        wanted.sweep
    )
    # A setting no run param of DEFINING_PARAMS shows makes another study all the same.
    other = _study_definition(_launching_config([*launched, "trainer.probe_rows=7"]))
    assert definition_differences(other, wanted.sweep) == [
        f"trainer.probe_rows: 7 -> {wanted.sweep['trainer.probe_rows']}"
    ]


def test_a_study_resumed_is_the_study_the_ledger_reads(tracking_uri: str) -> None:
    """Of two finished, complete sweeps of lr_sweep, the newer recorded another study
    definition: ``+resume=matching`` continues the older, and the ledger reads the older."""
    from xent_tf.launch.callback import _newest_parent_of_study
    from xent_tf.track.recovery import record_study_definition

    definition = define_study("lr_sweep")
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("lr_sweep")
    other = {**definition.sweep, "trainer.probe_rows": "7"}
    parents = []
    for started, recorded in ((1000, definition.sweep), (2000, other)):
        run = client.create_run(
            experiment_id,
            start_time=started,
            tags={"xent.sweep_dir": "/tmp/x", reading.STUDY_TAG: "lr_sweep"},
        )
        client.set_terminated(run.info.run_id, "FINISHED")
        record_study_definition(tracking_uri, run.info.run_id, recorded)
        for lr in ("0.1", "10.0"):
            for seed in (0, 1):
                params = {**definition.params, "data.name": "reference"}
                _child(client, experiment_id, run.info.run_id, lr, seed, "FINISHED", "", params)
        parents.append(run.info.run_id)
    older, newer = parents
    resumed = _newest_parent_of_study(tracking_uri, "lr_sweep", dict(definition.sweep))
    assert resumed is not None and resumed.run_id == older
    read = from_studies.find_study("lr_sweep", tracking_uri, (0, 1), definition, False, None)
    assert read.parent is not None and read.parent.run_id == older
    assert read.skipped == (
        f"sweep {newer[:8]} not used: another study definition (recorded -> the study's): "
        "trainer.probe_rows: 7 -> 64",
    )


def test_study_problem_accepts_diverged_runs() -> None:
    parent = reading.StudyRun("p", "1", "lr_sweep", "lr_sweep", "FINISHED", 0)

    def record(lr: str, seed: int, status: str = "FINISHED", error: str | None = None) -> RunRecord:
        params = {"optimizer.learning_rate": lr, **LR_SWEEP_PARAMS}
        return RunRecord(
            "r", params, seed, status, error=error, diverged_epoch=2 if error else None
        )

    diverged = "NonFiniteLossError: training loss became NaN/inf at epoch 2"
    records = [record("0.1", 0), record("0.1", 1), record("10", 0, "FAILED", diverged)]
    records.append(record("10", 1, "FAILED", diverged))
    anything = StudyDefinition({}, {}, "")
    assert from_studies.study_problem(parent, "lr_sweep", records, anything, (0, 1)) == ""
    assert "tagged study 'annealing'" in from_studies.study_problem(
        reading.StudyRun("p", "1", "lr_sweep", "annealing", "FINISHED", 0),
        "lr_sweep",
        records,
        anything,
        (0, 1),
    )
    assert from_studies.study_problem(parent, "lr_sweep", [], anything, ()) == "no child runs"
    # C12's fixed target needs each run's majority share, its accuracy area the epoch count,
    # which older versions did not log.
    mse_parent = reading.StudyRun("p", "1", "mse_vs_ce", "mse_vs_ce", "FINISHED", 0)
    old = [RunRecord("r", {"loss.name": "mse"}, seed, "FINISHED") for seed in (0, 1)]
    assert from_studies.study_problem(mse_parent, "mse_vs_ce", old, anything, (0, 1)) == (
        "its runs do not log ['data.majority_share', 'trainer.epochs'], which the rules need (an "
        "older version)"
    )
    logged = {"data.majority_share": "0.5", "trainer.epochs": "20"}
    new = [RunRecord("r", {**r.params, **logged}, r.seed, "FINISHED") for r in old]
    assert from_studies.study_problem(mse_parent, "mse_vs_ce", new, anything, (0, 1)) == ""


def test_study_problem_accepts_runs_whose_range_test_gave_no_rate_but_not_crashes() -> None:
    parent = reading.StudyRun("p", "1", "lr_sweep", "lr_sweep", RunStatus.FINISHED, 0)
    no_rate = (
        "NoSuggestionError: lr_find: no suggestion: the smoothed loss never fell below the "
        "first batch's loss 0.7"
    )

    def record(use: str, seed: int, tags: dict[str, str] | None = None) -> RunRecord:
        params = {**LR_SWEEP_PARAMS, "optimizer.learning_rate": "0.1", "lr_find.use": use}
        if tags is None:
            return RunRecord(f"{use}{seed}", params, seed, RunStatus.FINISHED)
        return RunRecord(
            f"{use}{seed}",
            params,
            seed,
            RunStatus.FAILED,
            error=no_rate,
            tags=tags,
            no_suggestion=no_suggestion_of(tags),
        )

    grid = [record("given", seed) for seed in (0, 1)]
    # Seed 1's range test gave no rate: its steepest and valley arms failed, tagged.
    measured = [record("steepest", 0), record("valley", 0)]
    measured += [record(use, 1, no_suggestion_tags()) for use in ("steepest", "valley")]
    anything = StudyDefinition({}, {}, "")
    assert from_studies.study_problem(parent, "lr_sweep", grid + measured, anything, (0, 1)) == ""
    # The same failure with the tag missing (the error text alone) is a crash: the sweep is
    # not used, so the ledger re-runs it.
    untagged = [*grid, *measured[:3], record("valley", 1, {})]
    assert from_studies.study_problem(parent, "lr_sweep", untagged, anything, (0, 1)) == (
        f"1 of 6 child runs FAILED (first: {no_rate})"
    )


def test_study_definition_comes_from_the_study_config() -> None:
    definition = define_study("lr_sweep")
    assert set(definition.params) == set(DEFINING_PARAMS)
    assert definition.datasets == "reference"
    # A study that sweeps two data sets needs both; pinned to one, only that one.
    assert define_study("mse_vs_ce").datasets == "multiclass,reference"
    on_wine = define_study("mse_vs_ce", ["+debug=quick"], dataset="wine")
    assert on_wine.datasets == "wine" and "data.n_samples" not in on_wine.params
    assert (on_wine.sweep["experiment"], on_wine.sweep["data"], on_wine.sweep["debug"]) == (
        "mse_vs_ce",
        "wine",
        "quick",
    )
    assert (definition.params["trainer.epochs"], definition.params["data.n_samples"]) == (
        "20",
        "10000",
    )
    assert definition.sweep["trainer.epochs"] == "20" and "seed" not in definition.sweep
    tiny = define_study("lr_sweep", TINY_STUDY)
    assert (tiny.params["trainer.epochs"], tiny.params["data.n_samples"]) == ("2", "300")


# --- end to end --------------------------------------------------------------------------


class TinyRunner:
    """Runs tiny versions of the studies in-process; their definition is the tiny one."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        self.datasets: list[str | None] = []

    def run(
        self, study: str, seeds: Sequence[int], tracking_uri: str, dataset: str | None = None
    ) -> None:
        self.calls.append((study, tuple(seeds)))
        self.datasets.append(dataset)
        sweep_dir = self.tmp_path / f"sweep-{study}-{len(self.calls)}"
        run_study(study, list(seeds), tracking_uri, sweep_dir, dataset)

    def definition(self, study: str, dataset: str | None = None) -> StudyDefinition:
        if dataset is None:
            return define_study(study, TINY_STUDY)
        return define_study(study, tiny_overrides(dataset)[1:], dataset)


class MustNotRun(TinyRunner):
    def run(
        self, study: str, seeds: Sequence[int], tracking_uri: str, dataset: str | None = None
    ) -> None:
        raise AssertionError(f"{study} should come from the store")


def test_ledger_end_to_end_runs_missing_studies_then_reuses_the_store(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    runner = TinyRunner(tmp_path)
    config = make_config(
        *LEDGER_TINY,
        f"tracking.uri={tracking_uri}",
        "claims.only=[C1,C2,C5,C8,C13,C16]",
        "claims.seeds=2",
    )
    result, text = ledger.run_ledger(config, tmp_path / "out", runner)
    # lr_sweep on twice the seeds: C13 picks its roles on 0,1 and is judged on 2,3
    assert runner.calls == [("binary_vs_categorical", (0, 1)), ("lr_sweep", (0, 1, 2, 3))]
    by_id = {r.claim: r for r in result.results}
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
    study = {s.study: s for s in result.studies}["binary_vs_categorical"]
    assert study.parent is not None and study.ran_now and study.seeds == (0, 1)
    assert f"run by this ledger, {study.date}; config {study.config_hash}; seeds 0,1, 10 runs" in (
        c8.measured
    )
    assert c8.links[0].url == connection.run_url(study.parent.experiment_id, study.parent.run_id)
    # its exact parts were measured in the ledger run, so that run is linked too
    assert result.links(c8)[-1].url == result.run_url and "exact parts" in c8.source
    # C13: seeds 0,1 pick the roles, 2,3 are judged: no trend over two seeds concludes
    c13 = by_id["C13"]
    assert c13.verdict == INCONCLUSIVE
    trend = next(p for p in c13.parts if "oscillation of the probe loss" in p.context)
    assert trend.verdict.verdict == INCONCLUSIVE and "(n=2" in trend.verdict.measured
    assert "roles on seeds [0, 1]" in c13.measured or "roles on seeds [0, 1]" in str(c13.parts)
    c16 = by_id["C16"]
    assert c16.source.startswith("reference run made by this ledger")
    # the tiny config is not the reference split: the rule says so
    assert c16.parts[0].verdict.verdict == CONTRADICTED and "split (168, 72, 60)" in c16.measured
    assert "C2 " in text and "CONTRADICTED" in text and f"config {study.config_hash}" in text

    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "claims"
    assert run.data.tags["verdict.C2"] == "contradicted" and run.data.tags["verdict.C1"] == "holds"
    # the rules the verdicts follow: protocol version and rules hash, in every output
    version, rules_hash = protocol.PROTOCOL_VERSION, registry.protocol_hash()
    assert len(rules_hash) == 12 and (result.protocol_version, result.rules_hash) == (
        version,
        rules_hash,
    )
    assert run.data.params["protocol.protocol_version"] == version
    assert run.data.params["protocol.rules_hash"] == rules_hash
    assert run.data.tags["xent.rules_hash"] == rules_hash
    assert f"rules: protocol {version}, rules hash {rules_hash}" in text
    assert {a.path for a in client.list_artifacts(result.run_id)} >= {
        "claims.md",
        "claims.html",
        "claims.json",
    }
    data = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert (data["protocol_version"], data["rules_hash"]) == (version, rules_hash)
    assert [c["claim"] for c in data["claims"]] == list(by_id)
    assert data["claims"][0]["links"][0]["url"] == result.run_url  # computed here -> this run
    assert data["studies"][0]["seeds"] == [0, 1] and data["studies"][0]["config_hash"]
    page = (tmp_path / "out" / "claims.html").read_text()
    assert f'href="{c8.links[0].url}"' in page and "class='contradicted'" in page
    assert f"Rules: protocol {version}, rules hash {rules_hash}" in page
    markdown = (tmp_path / "out" / "claims.md").read_text()
    assert f"Rules: protocol {version}, rules hash {rules_hash}" in markdown
    assert "| claim | what the tutorial says | what was measured | verdict | rule | from |" in (
        markdown
    )

    # A newer failed sweep in the store is named and skipped; the complete one is reused, and
    # C16 now comes from the reference run the first ledger recorded.
    experiment_id = client.get_experiment_by_name("lr_sweep").experiment_id  # type: ignore[union-attr]
    failed = _parent(client, experiment_id, "lr_sweep", "FAILED")
    config = make_config(
        *LEDGER_TINY, f"tracking.uri={tracking_uri}", "claims.only=[C13,C16]", "claims.seeds=2"
    )
    again, _ = ledger.run_ledger(config, tmp_path / "again", MustNotRun(tmp_path))
    # ... and passes over the other data set's sweep without a note
    assert not any("data set" in note for note in again.results[1].notes)
    c13, c16_again = again.results
    assert f"sweep {failed[:8]} not used: parent run ended FAILED" in c13.notes
    assert "latest finished study in the store" in c13.measured
    assert c16_again.source.startswith("latest finished reference run in the store")
    assert (
        c16_again.links[0].url.split("/runs/")[1].split("/")[0]
        == c16.links[0].url.split("/runs/")[1].split("/")[0]
    )


def test_stability_mode_judges_two_disjoint_seed_sets(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    runner = TinyRunner(tmp_path)
    config = make_config(
        *LEDGER_TINY,
        f"tracking.uri={tracking_uri}",
        "claims.only=[C1,C15]",
        "claims.seeds=2",
        "claims.stability=true",
    )
    result, text = ledger.run_ledger(config, tmp_path / "out", runner)
    assert runner.calls == [("annealing", (0, 1)), ("annealing", (2, 3))]
    (row,) = result.stability
    assert row.claim == "C15" and row.seed_sets == ((0, 1), (2, 3))
    c15 = result.results[1]
    # two seeds per set settle nothing (no exact test gets below p = 1/4 on 2): both sets
    # are inconclusive, so they agree
    assert row.verdicts == (INCONCLUSIVE, INCONCLUSIVE) and row.agree
    assert c15.verdict == INCONCLUSIVE
    assert all(
        p.verdict.verdict in (INCONCLUSIVE, Verdict.NOT_MEASURED) for p in c15.parts if p.counted
    )
    assert result.results[0].verdict == HOLDS  # C1 is exact: not judged per seed set
    assert {p.context.split("]")[0] for p in c15.parts} == {"[seeds 0,1", "[seeds 2,3"}
    assert "stability (each training claim on two disjoint seed sets)" in text
    data = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert data["stability"][0]["seed_sets"] == [[0, 1], [2, 3]]


def test_a_studys_seed_sets_are_its_seed_factor_times_as_long() -> None:
    # lr_sweep (StudySpec.seed_factor 2: C13 picks its roles on one half, is judged on the
    # other): 0..2n-1, and 2n..4n-1 for the second set; the other studies take the sets as given
    assert ledger.study_seed_sets("lr_sweep", [(0, 1), (2, 3)]) == ((0, 1, 2, 3), (4, 5, 6, 7))
    assert ledger.study_seed_sets("lr_sweep", [(0, 1, 2)]) == ((0, 1, 2, 3, 4, 5),)
    assert ledger.study_seed_sets("annealing", [(0, 1), (2, 3)]) == ((0, 1), (2, 3))


def _check(claim: str, verdict: Verdict) -> ClaimCheck:
    """A study's check of ``claim`` with one (exact) part of ``verdict``."""
    part = ClaimPart("the part", Finding(verdict, "rule", "measured"))
    return ClaimCheck(claim, "s", verdict, "rule", [part])


def test_data_sets_on_two_seed_sets_correct_each_set_then_compare_them() -> None:
    def check(verdict: Verdict, p: float | None = None) -> ClaimCheck:
        finding = (
            Finding(verdict, "r", "m") if p is None else Finding(CONTRADICTED, "r", "m", 0.9, p)
        )
        return ClaimCheck("C13", "s", verdict, "rule", [ClaimPart("part", finding)])

    sets = [(0, 1, 2), (3, 4, 5)]

    def judge(checks: dict[tuple[str, int], ClaimCheck]) -> tuple[ClaimResult, list]:
        evidence = {
            (d, sets[i]): StudyEvidence("lr_sweep", (c,), seeds=sets[i])
            for (d, i), c in checks.items()
        }
        stability: list = []
        row = ledger._datasets_on_seed_sets("C13", evidence, sets, ["a", "b"], (), stability)
        return row, stability

    row, stability = judge(
        {
            ("a", 0): check(HOLDS),
            ("a", 1): check(HOLDS),
            ("b", 0): check(HOLDS),
            ("b", 1): check(INCONCLUSIVE),
        }
    )
    assert [(r.dataset, r.verdicts) for r in stability] == [
        ("a", (HOLDS, HOLDS)),
        ("b", (HOLDS, INCONCLUSIVE)),
    ]
    assert [d.verdict for d in row.per_dataset] == [HOLDS, Verdict.UNSTABLE]
    assert row.verdict == INCONCLUSIVE and row.holds_on == "1 of 2"
    assert any(p.context.startswith("[seeds 3-5] [b] ") for p in row.parts)
    # on each seed set, both data sets' p = 0.02 go through Holm together: not contradicted
    row, stability = judge({(d, i): check(CONTRADICTED, 0.02) for d in "ab" for i in (0, 1)})
    assert [r.verdicts for r in stability] == [(INCONCLUSIVE, INCONCLUSIVE)] * 2
    assert row.verdict == INCONCLUSIVE


def test_disagreeing_seed_sets_make_a_claim_unstable() -> None:
    evidence = [
        StudyEvidence(
            "lr_sweep",
            (_check("C13", verdict),),
            reading.StudyRun(f"run{i}", "1", "lr_sweep", "lr_sweep", "FINISHED", 0),
            seeds=seeds,
        )
        for i, (verdict, seeds) in enumerate(((HOLDS, (0, 1, 2)), (CONTRADICTED, (3, 4, 5))))
    ]
    per_set = [from_studies.evaluate_study_claim("C13", e) for e in evidence]
    combined = ledger._combine_seed_sets(per_set, [(0, 1, 2), (3, 4, 5)])
    assert combined.verdict == Verdict.UNSTABLE
    assert (
        "seeds 0-2: holds" in combined.measured and "seeds 3-5: contradicted" in combined.measured
    )
    same = ledger._combine_seed_sets([per_set[0], per_set[0]], [(0, 1, 2), (3, 4, 5)])
    assert same.verdict == HOLDS


def test_every_claim_is_measured_here_or_fed_by_a_study() -> None:
    for claim in registry.CLAIMS.values():
        assert (claim.id in ledger.EXACT_CLAIMS) != bool(claim.study), claim.id


def test_claims_on_several_data_sets_give_a_verdict_per_data_set(
    make_config: Callable[..., Config], tracking_uri: str, tmp_path: Path
) -> None:
    runner = TinyRunner(tmp_path)
    config = make_config(
        *LEDGER_TINY,
        f"tracking.uri={tracking_uri}",
        "claims.only=[C1,C8]",
        "claims.seeds=2",
        "claims.datasets=[breast_cancer,iris]",
    )
    result, text = ledger.run_ledger(config, tmp_path / "out", runner)
    assert runner.calls == [("binary_vs_categorical", (0, 1))] * 2
    assert runner.datasets == ["breast_cancer", "iris"]
    c1, c8 = result.results
    assert c1.per_dataset == () and c1.holds_on == ""  # exact: not judged per data set
    assert [d.dataset for d in c8.per_dataset] == ["breast_cancer", "iris"]
    # cce and sparse_cce train identically by construction (the same head and maths): that
    # pair is not applicable, shown and not counted; iris (3 classes) has only that pair, so
    # C8 does not apply there. 2 seeds settle no equivalence of the sigmoid head with the
    # softmax one (min_seeds = 3): breast_cancer is inconclusive.
    na = Verdict.NOT_APPLICABLE
    assert [d.verdict for d in c8.per_dataset] == [INCONCLUSIVE, na]
    assert [p.verdict.verdict for p in c8.parts if "cce vs sparse_cce" in p.context] == [na] * 2
    assert c8.holds_on == "0 of 1 (1 not applicable)"
    assert c8.measured.startswith("holds on 0 of 1 (1 not applicable) data sets.")
    assert c8.verdict == INCONCLUSIVE
    # breast_cancer is binary: the three head pairs; iris has 3 classes: cce vs sparse_cce.
    contexts = [p.context for p in c8.parts]
    assert [c.startswith("[") for c in contexts[:3]] == [False, False, True]  # 2 exact parts
    study_parts = [c for c in contexts if c.startswith("[")]
    assert [c for c in study_parts if "] [C8] " in c] == [
        "[breast_cancer] [C8] breast_cancer data (2 classes): sigmoid+bce vs 2-unit softmax+cce",
        "[breast_cancer] [C8] breast_cancer data (2 classes): sigmoid+bce vs 2-unit "
        "softmax+sparse_cce",
        "[breast_cancer] [C8] breast_cancer data (2 classes): cce vs sparse_cce (same head)",
        "[iris] [C8] iris data (3 classes): cce vs sparse_cce (same head)",
    ]
    iris = {s.dataset: s for s in result.studies}["iris"]
    assert iris.n_runs == 4  # cce and sparse_cce x 2 seeds: bce was left out
    assert "binary_vs_categorical on iris: sweep" in iris.describe()
    assert "per data set" in text and "0 of 1 (1 not applicable)" in text
    data = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert data["datasets"] == ["breast_cancer", "iris"]
    assert data["claims"][1]["per_dataset"] == {
        "breast_cancer": "inconclusive",
        "iris": "not applicable",
    }
    markdown = (tmp_path / "out" / "claims.md").read_text()
    assert "| claim | breast_cancer | iris | holds on | verdict |" in markdown
    # each verdict links to the sweep (parent run) of its data set's study
    sweeps = {s.dataset: s.parent_link() for s in result.studies}
    assert sweeps["breast_cancer"] is not None and sweeps["iris"] is not None
    assert (
        f"| C8 | [inconclusive]({sweeps['breast_cancer'].url}) | [not applicable]"
        f"({sweeps['iris'].url}) | 0 of 1 (1 not applicable) | inconclusive |" in markdown
    )
    assert "class='not-applicable'" in (tmp_path / "out" / "claims.html").read_text()
    # The studies are in the store now: a second ledger reuses them per data set.
    again, _ = ledger.run_ledger(config, tmp_path / "again", MustNotRun(tmp_path))
    # ... and passes over the other data set's sweep without a note
    assert not any("data set" in note for note in again.results[1].notes)
    assert [s.parent.run_id for s in again.studies if s.parent] == [
        s.parent.run_id for s in result.studies if s.parent
    ]


def test_a_claims_row_over_data_sets_follows_the_stated_rule() -> None:
    def row(verdict: Verdict) -> ClaimResult:
        evidence = StudyEvidence(
            "lr_sweep",
            (_check("C13", verdict),),
            reading.StudyRun("run", "1", "lr_sweep", "lr_sweep", "FINISHED", 0),
            seeds=(0, 1),
        )
        return from_studies.evaluate_study_claim("C13", evidence)

    cases = [
        ((HOLDS, HOLDS, HOLDS), HOLDS, "3 of 3"),
        ((HOLDS, CONTRADICTED, HOLDS), CONTRADICTED, "2 of 3"),
        ((HOLDS, INCONCLUSIVE, HOLDS), INCONCLUSIVE, "2 of 3"),
        ((INCONCLUSIVE, CONTRADICTED), CONTRADICTED, "0 of 2"),
        ((HOLDS, Verdict.NOT_APPLICABLE), HOLDS, "1 of 1 (1 not applicable)"),
        ((Verdict.NOT_APPLICABLE,), Verdict.NOT_APPLICABLE, "not applicable"),
    ]
    for verdicts, expected, held in cases:
        per_dataset = {f"d{i}": row(v) for i, v in enumerate(verdicts)}
        combined = ledger.combine_datasets("C13", per_dataset)
        assert (combined.verdict, combined.holds_on) == (expected, held), verdicts
        assert [d.verdict for d in combined.per_dataset] == list(verdicts)
        assert combined.on("d0") == verdicts[0] and combined.on("elsewhere") is None

    # Holm's correction runs over every data set's parts: each data set contradicted on its
    # own (p = 0.02 <= 0.025) is not, as one claim over two data sets (first step 0.0125)
    def against(p: float) -> ClaimResult:
        finding = Finding(CONTRADICTED, "rule", "measured", 0.9, p)
        check = ClaimCheck("C13", "s", CONTRADICTED, "rule", [ClaimPart("part", finding)])
        return from_studies.evaluate_study_claim("C13", StudyEvidence("lr_sweep", (check,)))

    alone = {"a": against(0.02), "b": against(0.02)}
    assert [r.verdict for r in alone.values()] == [CONTRADICTED, CONTRADICTED]
    combined = ledger.combine_datasets("C13", alone)
    assert combined.verdict == INCONCLUSIVE
    assert [d.verdict for d in combined.per_dataset] == [INCONCLUSIVE, INCONCLUSIVE]
    # a strong one is rejected at 0.0125, and Holm steps down: 0.02 <= 0.025 then is too
    strong = ledger.combine_datasets("C13", {"a": against(0.001), "b": against(0.02)})
    assert [d.verdict for d in strong.per_dataset] == [CONTRADICTED, CONTRADICTED]
    assert strong.verdict == CONTRADICTED
    # C8's exact parts are counted once, and can decide the row.
    failed_exact = ClaimPart("float32", Finding(CONTRADICTED, "r", "m"))
    combined = ledger.combine_datasets("C13", {"a": row(HOLDS)}, [failed_exact])
    assert combined.verdict == CONTRADICTED and combined.parts[0] is failed_exact


def test_unknown_data_sets_are_refused_by_name(
    make_config: Callable[..., Config], tmp_path: Path, tracking_uri: str
) -> None:
    config = make_config(
        *LEDGER_TINY, f"tracking.uri={tracking_uri}", "claims.datasets=[iris,mnist]"
    )
    with pytest.raises(
        ValueError,
        match=r"unknown data set\(s\) \['mnist'\]; known: breast_cancer, circles, digits, "
        r"imbalanced, iris, label_noise, moons, multiclass, reference, wine",
    ):
        ledger.run_ledger(config, tmp_path, None)
    # refused before anything is recorded: no ledger run, no files
    assert not (tmp_path / "claims.md").exists()
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists()
    with pytest.raises(ValueError, match=r"claims.datasets=\['iris', 'iris'\] names \['iris'\]"):
        make_config(*LEDGER_TINY, "claims.datasets=[iris,iris]")


def test_claims_measured_ahead_are_used_once_and_only_for_the_same_config(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    from xent_tf.claims.ledger import (
        evaluate_claims,
        hand_over_early,
        measure_exact_early,
        prepare_reads_early,
    )
    from xent_tf.claims.records import EarlyMeasurements
    from xent_tf.track.resume import training_config_hash

    config = make_config("+experiment=claims", "tracking=off", "claims.only=[C1,C4]")
    early = measure_exact_early(config).combined(prepare_reads_early(config, tmp_path))
    assert early.config_hash == training_config_hash(config) and early.definitions == {}
    measured, _, _ = evaluate_claims(config, tmp_path, None)  # nothing handed over
    assert [r.verdict for r in measured] == [Verdict.HOLDS, Verdict.HOLDS]
    assert early.results["C1"] == measured[0]  # the same measurement, made ahead
    # A constructed result shows which one the ledger used (the real C1 holds).
    constructed = dataclasses.replace(measured[0], verdict=Verdict.CONTRADICTED, measured="x")
    hand_over_early(EarlyMeasurements(training_config_hash(config), {"C1": constructed}))
    used, _, _ = evaluate_claims(config, tmp_path, None)
    assert [r.verdict for r in used] == [Verdict.CONTRADICTED, Verdict.HOLDS]
    again, _, _ = evaluate_claims(config, tmp_path, None)  # handed over once: measured again
    assert again[0].verdict == Verdict.HOLDS
    other = make_config("+experiment=claims", "tracking=off", "claims.only=[C1,C4]", "seed=7")
    hand_over_early(EarlyMeasurements(training_config_hash(other), {"C1": constructed}))
    assert evaluate_claims(config, tmp_path, None)[0][0].verdict == Verdict.HOLDS
    # A study claim's definition is composed ahead as the ledger composes it.
    only_c13 = make_config("+experiment=claims", "tracking=off", "claims.only=[C13]")
    lr = measure_exact_early(only_c13).combined(prepare_reads_early(only_c13, tmp_path))
    assert lr.results == {} and lr.definitions == {"lr_sweep": define_study("lr_sweep")}
