"""The names of the metrics a run logs, written once.

Every layer reads them: ``train.pipeline`` logs them, ``track`` reads them back, the rules of
``claims`` judge them.
"""

BATCH_LOSS_METRIC = "train/batch_loss"  # the loss of every training step, logged per step
# The loss on a fixed set of training rows after every step (``trainer.probe_rows``).
PROBE_LOSS_METRIC = "train/probe_loss"
