"""Everything a claim needs: its statement, its measurement, its rule, its verdict, its report.

- ``registry``: one ``Claim`` per claim (statement written once; docs/CLAIMS.md is generated).
- ``information`` (C1-C4, with ``info``'s NumPy entropies), ``loss_functions`` (C5-C9, with
  ``semantics``' Keras measurements), ``loss_scale`` (C10), ``gradients`` (C11),
  ``from_studies`` (C8's training half, C12-C15), ``reference`` (C16): measurements and rules,
  one family per module.
- ``studies``: the comparison studies and how each training claim is judged from their runs;
  ``comparison``: the ``Verdict`` enum and the rule primitives every rule is built from.
- ``protocol``: the verdict protocol's version, why it changed, the statistical rules every
  claim shares; ``calibration``: how often the rules call a verdict on relabelled null data.
- ``records``: the ledger's record types; ``runner``: how a study is run and defined;
  ``ledger``: ``run_ledger``, which the entry point calls with a study runner;
  ``ledger_render``: the ledger on screen and on disk; ``study_report``: one study's report.

May import ``xent_tf.config``, ``xent_tf.metrics``, ``xent_tf.train`` (the measurements
train), ``xent_tf.track`` (runs are read from and written to MLflow) and ``xent_tf.report``
(figures, the HTML page); never ``xent_tf.launch``.
"""
