"""The launching process of a Hydra multirun: the sweep callback and the launchers' work.

``callback`` (``MlflowSweepCallback``: the sweep's MLflow parent run, its report at the end),
``replica_sweep`` (composing a sweep's jobs, deciding which run, replica batches: the default
launcher's work, and the helpers the other launchers share), ``joblib_sweep`` and ``ray_sweep``
(the parallel launchers' work), ``worker_pool`` (worker processes where a dead one fails one job),
``lost_jobs`` (the runs of a dead worker end FAILED) and ``progress`` (the sweep's console).
Hydra finds the launchers through the plugins in ``hydra_plugins/xent_tf_launcher``.

May import every other package; ``xent_tf.train`` (TensorFlow) only inside the functions that
run in worker processes, so the launching process never imports TensorFlow.
"""
