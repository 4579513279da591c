"""xent-tf: measured, repeatable Keras/TensorFlow runs that check what tutorials say about
cross-entropy.

From Python (a notebook): ``xent_tf.study("mse_vs_ce", seeds=3)``, ``xent_tf.run("loss=mse")``,
``xent_tf.ledger("claims.only=[C12]")``, ``xent_tf.load_study("mse_vs_ce")``; see
``xent_tf.api``. Importing the package stays cheap: the API (Hydra, pandas) loads on first use,
TensorFlow and MLflow only when something trains or reads a store.
"""

from __future__ import annotations

from typing import Any

_API = (
    "Figure",
    "Ledger",
    "OverrideError",
    "RunSummary",
    "StudyResult",
    "ledger",
    "load_ledger",
    "load_study",
    "run",
    "study",
)
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    """The API's names, imported on first use (``xent_tf.api``)."""
    if name in _API:
        from xent_tf import api

        return getattr(api, name)
    raise AttributeError(f"module 'xent_tf' has no attribute {name!r}")
