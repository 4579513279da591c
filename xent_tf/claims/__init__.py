"""The claims ledger as a claim registry.

- ``registry``: one ``Claim`` per claim (statement written once; docs/CLAIMS.md is generated).
- ``information`` (C1-C4), ``loss_functions`` (C5-C9), ``loss_scale`` (C10), ``gradients``
  (C11), ``from_studies`` (C8's training half, C12-C15), ``reference`` (C16): measurements
  and rules, one family per module.
- ``records``: the ledger's record types; ``runner``: how a study is run and defined;
  ``ledger``: ``run_ledger``, which the entry point calls with a study runner.

Verdicts are ``comparison.Verdict``; the rule primitives are in ``comparison``.
"""
