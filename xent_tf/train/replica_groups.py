"""Which of a sweep's jobs can train as replicas of one graph (no TensorFlow here).

A config's ``graph_key`` is everything of it but the fields a replica may have of its own (the
seed, the learning rate, the schedule, the output initialisation, the range test's choice of
rate and the accuracy target): same data, architecture, loss, optimizer kind and settings,
batch size, epochs and device. ``group_jobs`` never merges configs whose keys differ. The
replica launcher groups a sweep's jobs in the launching process, which never imports
TensorFlow (importing it there cost a study's start-up seconds): hence this module of its own.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from xent_tf.config import Config, MlpConfig

# Config fields a replica may have of its own; every other field must match across a batch.
PER_REPLICA_FIELDS = (
    "seed",
    "optimizer.learning_rate",
    "schedule",
    "model.output_init",
    "model.saturation_scale",
    "lr_find.use",
    "trainer.target_val_acc",
    "trainer.verbose",
)


def graph_key(config: Config) -> str:
    """What a replica batch's graph depends on: the config without its per-replica fields.

    Args:
        config: a job's validated config.

    Returns:
        A string equal for two configs exactly when they can train as replicas of one batch.
    """
    tree = dataclasses.asdict(config)
    for dotted in PER_REPLICA_FIELDS:
        *parents, leaf = dotted.split(".")
        node = tree
        for parent in parents:
            node = node[parent]
        node.pop(leaf, None)
    return json.dumps(tree, sort_keys=True)


def replicable(config: Config) -> bool:
    """Whether the replica trainer can stack this config's model and optimizer (an MLP with a
    plain Adam or SGD; ``replicas.OptimizerRule`` checks the optimizer again when it builds)."""
    return isinstance(config.model, MlpConfig) and config.optimizer.name in ("adam", "sgd")


def group_jobs(configs: Sequence[Config | None], max_replicas: int) -> list[list[int]]:
    """Group job indices into replica batches.

    Args:
        configs: each job's config, None for a job that is not to be trained (invalid).
        max_replicas: most replicas in one batch; a larger group is cut into several.

    Returns:
        Batches of indices into ``configs``, in order of first appearance; a batch may hold one.
    """
    if max_replicas < 1:
        raise ValueError(f"max_replicas={max_replicas} must be >= 1")
    groups: dict[str, list[int]] = {}
    for index, config in enumerate(configs):
        if config is None:
            continue
        # Only the MLP is stacked; a user model (model=keras) runs as a job of its own.
        key = graph_key(config) if replicable(config) else f"job {index}"
        groups.setdefault(key, []).append(index)
    return [
        members[start : start + max_replicas]
        for members in groups.values()
        for start in range(0, len(members), max_replicas)
    ]


# A batch is halved for a worker that would otherwise not start only when each half keeps at
# least this many replicas: a smaller batch gains less from a core of its own than a new
# worker's start-up (a TensorFlow import) costs.
MIN_SPLIT_REPLICAS = 8
# Halving a batch to even out the workers' last round costs no new worker, only the half's own
# graph: worth it down to halves of this many replicas.
MIN_FILL_REPLICAS = 4


def longest_first(batches: Sequence[Sequence[int]]) -> list[list[int]]:
    """The order a launcher hands batches out in: the largest first (equal sizes keep their
    order), so that the small ones even out the workers' last round.

    Args:
        batches: job indices of each batch.

    Returns:
        The same batches, largest first.
    """
    return sorted((list(b) for b in batches), key=len, reverse=True)


def last_finish(sizes: Sequence[int], n_workers: int) -> int:
    """When the last worker finishes, in replicas, if batches of these sizes are handed out
    largest first, each to the worker that is free first (as the worker pool does).

    Args:
        sizes: replicas in each batch.
        n_workers: processes the batches are spread over.

    Returns:
        The most replicas any worker trains and records.
    """
    loads = [0] * max(n_workers, 1)
    for size in sorted(sizes, reverse=True):
        loads[loads.index(min(loads))] += size
    return max(loads)


def spread_batches(
    batches: Sequence[Sequence[int]],
    n_workers: int,
    min_replicas: int = MIN_SPLIT_REPLICAS,
    min_fill_replicas: int = MIN_FILL_REPLICAS,
) -> list[list[int]]:
    """Halve the largest batch while workers would be idle.

    One replica batch trains on one core's worth of work and records its runs one after
    another; its time grows with its replicas. With fewer batches than workers, a worker would
    sit idle all along: the largest batch is halved (halves of at least ``min_replicas``).
    With more, the batches are handed out largest first (``longest_first``) and the last round
    may still leave a worker idle (5 batches of 10 on 2 workers: one worker trains 30 replicas,
    the other 20): the largest batch is halved (halves of at least ``min_fill_replicas``) as
    long as that makes the last worker finish sooner (``last_finish``; 5 batches of 10 become 6
    and each worker trains 25). A replica's numbers do not depend on the batch it is in beyond
    float32 rounding (the batched kernels sum in another order: ``tests/test_replicas.py``).

    Args:
        batches: job indices of each batch, as ``group_jobs`` makes them.
        n_workers: processes the batches are spread over.
        min_replicas: the fewest replicas a half may have when it needs a worker of its own.
        min_fill_replicas: the fewest replicas a half may have when it evens out the last round.

    Returns:
        The batches, a halved one's halves in its place (first half first).
    """
    spread = [list(b) for b in batches]

    def halved(smallest_half: int) -> list[list[int]] | None:
        largest = max(range(len(spread)), key=lambda i: len(spread[i]), default=None)
        if largest is None or len(spread[largest]) < 2 * smallest_half:
            return None
        members = spread[largest]
        half = (len(members) + 1) // 2
        return [*spread[:largest], members[:half], members[half:], *spread[largest + 1 :]]

    while len(spread) < n_workers and (fewer := halved(min_replicas)) is not None:
        spread = fewer
    finish = last_finish([len(b) for b in spread], n_workers)
    while len(spread) >= n_workers and (evener := halved(min_fill_replicas)) is not None:
        sooner = last_finish([len(b) for b in evener], n_workers)
        if sooner >= finish:
            break
        spread, finish = evener, sooner
    return spread
