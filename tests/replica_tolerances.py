"""How close a replica's numbers must be to its single run's (the yardstick is in
tests/test_replicas.py's docstring); the integration tests compare launchers with them too."""

BATCH_LOSS_ATOL = 5e-2
VAL_LOSS_ATOL = 5e-3
VAL_ACC_ATOL = 5e-3  # 13 of 2,700 validation rows
FIRST_EPOCH_ATOL = 2e-5
