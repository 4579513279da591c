"""xent-tf's Hydra launcher plugin: sweeps trained as replica batches (see xent_tf.replica_sweep)."""
