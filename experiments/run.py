"""Train one configuration (default: the reference run of CLAIMS.md C16) and record it in MLflow.

python experiments/run.py                                   # the reference run
python experiments/run.py loss=mse optimizer.learning_rate=0.01 trainer.epochs=5
python experiments/run.py -m seed=0,1,2 hydra/launcher=joblib
python experiments/run.py +experiment=claims                # the claims ledger (task: claims)
"""

from __future__ import annotations

import os

# Quiet TensorFlow's C++ start-up chatter; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hydra
from omegaconf import DictConfig

from xent_tf import tasks


def task(cfg: DictConfig) -> float:
    """Validate the config, then train (returns the final validation loss) or, with
    ``task: claims``, build the claims ledger (returns the number of contradicted claims).

    Defined here (the work is ``xent_tf.tasks.task``, which the notebook API runs too): Hydra
    names the job and finds ``configs/`` from the file of the function it decorates.
    """
    return tasks.task(cfg)


# The entry point. The task function stays importable undecorated: experiments/reproduce.py
# runs it for every study in one process.
main = hydra.main(version_base="1.3", config_path="../configs", config_name="config")(task)

if __name__ == "__main__":
    main()
