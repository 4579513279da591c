"""Training with TensorFlow/Keras: everything one run trains with, and one run end to end.

``data`` (sources and the split protocol), ``losses`` (name -> Keras loss, head, labels),
``models`` (the MLP; user models by dotted path), ``updates`` (fused optimizer steps),
``schedules`` (a rate per step), ``training`` (the compiled epoch loop), ``lr_finder`` (the
range test), ``runtime`` (device, threads, determinism), ``build`` (a config becomes a run's
parts), ``replicas`` / ``replica_groups`` / ``replica_batch`` (K runs trained as one graph) and
``pipeline`` (one run end to end: train, evaluate, record in MLflow, plot).

May import ``xent_tf.config``, ``xent_tf.metrics``, ``xent_tf.track`` (a run's records) and
``xent_tf.report`` (its plots); never ``xent_tf.claims`` or ``xent_tf.launch``.
"""
