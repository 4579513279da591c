"""C16: the reference run of CLAIMS.md, found in the store or run by the ledger."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from xent_tf.claims.comparison import PARTS_RULE, at_least, at_most, band
from xent_tf.claims.records import ClaimResult, Link, claim_result
from xent_tf.claims.registry import rule_float, rule_floats
from xent_tf.claims.studies import ClaimPart
from xent_tf.config import Config
from xent_tf.metrics import TEST_ACC_METRIC, TEST_LOSS_METRIC, TRAIN_LOSS_METRIC, VAL_LOSS_METRIC
from xent_tf.track import connection, reading, writing
from xent_tf.train.data import make_dataset
from xent_tf.train.pipeline import run_experiment

log = logging.getLogger(__name__)

REFERENCE_EXPERIMENT = "reference"


REFERENCE_SPLIT = tuple(int(n) for n in rule_floats("C16", "split"))
REFERENCE_MIN_TEST_ACC = rule_float("C16", "min_test_acc")  # "classifies the test set well"
REFERENCE_GAP_HOLDS = rule_float("C16", "gap_holds")  # final |val - train| loss: "together"
REFERENCE_GAP_CONTRADICTED = rule_float("C16", "gap_contradicted")  # clearly apart


@dataclass(frozen=True)
class ReferenceOutcome:
    """The reference run's numbers.

    Attributes:
        split: rows in train, validation and test.
        train_loss / val_loss: per epoch.
        test_loss / test_acc: after training.
        run_id / experiment_id: the MLflow run ("-" when not recorded).
        source: "latest finished run in the store" or "run by this ledger".
        tracking_uri: the store (for links into its UI).
    """

    split: tuple[int, int, int]
    train_loss: tuple[float, ...]
    val_loss: tuple[float, ...]
    test_loss: float
    test_acc: float
    run_id: str
    experiment_id: str
    source: str
    tracking_uri: str = ""


def reference_params(config: Config) -> dict[str, str]:
    """The logged params a stored run must have to count as this reference configuration."""
    keep = ("data.", "model.", "loss.", "optimizer.", "schedule.")
    exact = ("trainer.epochs", "trainer.batch_size", "lr_find.enabled")
    flat = writing.flatten(dataclasses.asdict(config))
    return {k: v for k, v in flat.items() if k.startswith(keep) or k in exact}


def find_or_run_reference(config: Config, out_dir: Path, rerun: bool) -> ReferenceOutcome:
    """The latest finished reference run in the store, or one run now (recorded in MLflow).

    Args:
        config: the reference configuration (the ledger's own training sections).
        out_dir: where a new run writes its local files.
        rerun: run it even when the store has one.

    Returns:
        The run's numbers.
    """
    dataset = make_dataset(config.data)
    split = (len(dataset.train), len(dataset.val), len(dataset.test))
    reference = dataclasses.replace(
        config, experiment_name=REFERENCE_EXPERIMENT, task="train", study=""
    )
    if config.tracking.enabled and not rerun:
        found = reading.latest_finished_run(
            config.tracking.uri,
            REFERENCE_EXPERIMENT,
            reference_params(reference),
            (TRAIN_LOSS_METRIC, VAL_LOSS_METRIC),
        )
        if found is not None:
            record, experiment_id = found
            return ReferenceOutcome(
                split=split,
                train_loss=tuple(record.history.get(TRAIN_LOSS_METRIC, ())),
                val_loss=tuple(record.history.get(VAL_LOSS_METRIC, ())),
                test_loss=float(record.final.get(TEST_LOSS_METRIC, math.nan)),
                test_acc=float(record.final.get(TEST_ACC_METRIC, math.nan)),
                run_id=record.run_id,
                experiment_id=experiment_id,
                source="latest finished reference run in the store",
                tracking_uri=config.tracking.uri,
            )
    log.info("no finished reference run in the store: running it now")
    summary = run_experiment(reference, out_dir, run_name="reference-for-claims")
    return ReferenceOutcome(
        split=split,
        train_loss=tuple(r.train_loss for r in summary.history),
        val_loss=tuple(r.val_loss for r in summary.history),
        test_loss=summary.test_loss,
        test_acc=summary.test_acc,
        run_id=summary.run_id,
        experiment_id=summary.experiment_id,
        source="reference run made by this ledger",
        tracking_uri=config.tracking.uri,
    )


def evaluate_c16(outcome: ReferenceOutcome) -> ClaimResult:
    """C16: the split, both losses falling together, and the test accuracy."""
    mismatch = sum(abs(a - b) for a, b in zip(outcome.split, REFERENCE_SPLIT, strict=True))
    falls = math.nan
    gap = math.nan
    if outcome.train_loss and outcome.val_loss:
        falls = min(
            outcome.train_loss[0] - outcome.train_loss[-1],
            outcome.val_loss[0] - outcome.val_loss[-1],
        )
        gap = abs(outcome.val_loss[-1] - outcome.train_loss[-1])
    parts = [
        ClaimPart(
            f"split {REFERENCE_SPLIT[0]}/{REFERENCE_SPLIT[1]}/{REFERENCE_SPLIT[2]}",
            at_most(float(mismatch), 0, f"rows off the stated split (measured {outcome.split})"),
        ),
        ClaimPart(
            "train and val loss both fall",
            at_least(falls, 1e-9, "smaller of (epoch-1 loss - last-epoch loss) over train and val"),
        ),
        ClaimPart(
            "... together",
            band(
                gap,
                REFERENCE_GAP_HOLDS,
                REFERENCE_GAP_CONTRADICTED,
                "|val loss - train loss| at the last epoch",
            ),
        ),
        ClaimPart(
            "the test set is classified well",
            at_least(outcome.test_acc, REFERENCE_MIN_TEST_ACC, "test accuracy"),
        ),
    ]
    epochs = len(outcome.train_loss)
    measured = (
        f"split {outcome.split}; over {epochs} epochs train loss "
        f"{outcome.train_loss[0] if epochs else math.nan:.4f} -> "
        f"{outcome.train_loss[-1] if epochs else math.nan:.4f}, val loss "
        f"{outcome.val_loss[0] if outcome.val_loss else math.nan:.4f} -> "
        f"{outcome.val_loss[-1] if outcome.val_loss else math.nan:.4f}; test loss "
        f"{outcome.test_loss:.4f}, test accuracy {outcome.test_acc:.4f}"
    )
    links: tuple[Link, ...] = ()
    if outcome.run_id != "-":
        links = (
            Link(
                f"reference run {outcome.run_id[:8]}",
                connection.run_url(
                    outcome.experiment_id,
                    outcome.run_id,
                    connection.ui_address(outcome.tracking_uri),
                ),
            ),
        )
    return claim_result(
        "C16",
        parts,
        measured,
        f"'well' = test accuracy >= {REFERENCE_MIN_TEST_ACC:g}; 'together' = final gap <= "
        f"{REFERENCE_GAP_HOLDS:g}; " + PARTS_RULE,
        source=f"{outcome.source} ({outcome.run_id[:8]})",
        links=links,
        measured_here=False,
    )
