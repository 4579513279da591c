"""xent-tf's Hydra launcher plugin: sweeps as replica batches (see xent_tf.replica_sweep)."""
