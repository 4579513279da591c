"""MLflow records: the only package that imports mlflow.

``connection`` (the client, login, bounded retries, URLs, experiments), ``writing`` (a run:
``open_run`` and its metrics, params, tags, artifacts), ``artifacts`` (a run's logged model and
dataset inputs), ``reading`` (studies read back as ``run_record.RunRecord`` s), ``recovery``
(resuming a sweep, failing a dead worker's runs, replaying a spool), ``spool`` (what a run could
not deliver), ``sql_metrics`` (fast writes into a database store), ``resume`` (a config's hash,
the jobs a resumed sweep skips) and ``identity`` (a run's variant, name and tags).

May import ``xent_tf.config`` and ``xent_tf.metrics`` only.
"""
