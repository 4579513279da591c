"""xent-tf's Hydra launcher plugin: sweeps as replica batches (see xent_tf.launch.replica_sweep)."""
