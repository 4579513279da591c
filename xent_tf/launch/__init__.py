"""The launching process of a Hydra multirun: the sweep callback and the launchers' work.

``callback`` (``MlflowSweepCallback``: the sweep's MLflow parent run, its report at the end),
``compose`` (each job's config, composed as Hydra does, once per set of group choices), ``jobs`` (a
job's fate, ``JobOutcome``, decided once for every launcher and experiments/run.py),
``replica_sweep`` (the default launcher's work: replica batches), ``joblib_sweep`` and
``ray_sweep`` (the parallel launchers' work), ``worker_pool`` (worker processes where a dead one
fails one job), ``lost_jobs`` (a dead worker's jobs end FAILED) and ``progress`` (the console).
Hydra finds the launchers through the plugins in ``hydra_plugins/xent_tf_launcher``.

May import every other package; ``xent_tf.train`` (TensorFlow) only inside the functions that
run in worker processes, so the launching process never imports TensorFlow.
"""
