"""The names of the metrics a run logs, written once.

Every layer reads them: ``train.pipeline`` logs them, ``track`` reads them back, the rules of
``claims`` judge them, the reports and ``results`` show them. Tests keep the names as text:
they check the names a user sees in MLflow.
"""

# Per epoch (step = epoch), from ``training.EpochRecord.metrics``.
TRAIN_LOSS_METRIC = "train/loss"  # Keras's sample-weighted mean of the epoch's batch losses
TRAIN_ACC_METRIC = "train/acc"  # one pass over the training set with the epoch's end weights
VAL_LOSS_METRIC = "val/loss"
VAL_ACC_METRIC = "val/acc"
# Share of validation rows whose top probability is >= 0.99 (a saturated output).
VAL_SATURATED_METRIC = "val/saturated_fraction"
LEARNING_RATE_METRIC = "lr"  # the rate of the epoch's last step
EPOCH_SECONDS_METRIC = "epoch_seconds"
GRAD_NORM_PREFIX = "grad_norm/"  # + a layer's name: the norm of its full-batch gradient

# The untrained model on the validation split (step 0): the baseline of "diverged".
INITIAL_VAL_LOSS_METRIC = "val/initial_loss"
INITIAL_VAL_ACC_METRIC = "val/initial_acc"

# Once, at the end of a run that finished (step = the last epoch).
TEST_LOSS_METRIC = "test/loss"
TEST_ACC_METRIC = "test/acc"
TRAIN_SECONDS_METRIC = "train_seconds"  # training wall time, validation included
# The first epoch whose validation accuracy reached ``trainer.target_val_acc`` (absent: never).
EPOCHS_TO_TARGET_METRIC = "epochs_to_target"

# Per step.
BATCH_LOSS_METRIC = "train/batch_loss"  # the loss of every training step, logged per step
# The loss on a fixed set of training rows after every step (``trainer.probe_rows``).
PROBE_LOSS_METRIC = "train/probe_loss"

# The range test's curve, per step (``lr_find=on``).
LR_FIND_LR_METRIC = "lr_find/lr"
LR_FIND_LOSS_METRIC = "lr_find/loss"
LR_FIND_SMOOTHED_METRIC = "lr_find/loss_smoothed"


def grad_norm_metric(layer: str) -> str:
    """The per-epoch gradient norm metric of a layer (``grad_norm/<layer>``).

    Args:
        layer: the Keras layer's name.

    Returns:
        The metric's name.
    """
    return f"{GRAD_NORM_PREFIX}{layer}"


# The layers of ``models.build_mlp``'s models whose norms the rules and reports read.
OUTPUT_GRAD_NORM_METRIC = grad_norm_metric("output")
FIRST_HIDDEN_GRAD_NORM_METRIC = grad_norm_metric("hidden_1")
