"""Every comparison study, then the claims ledger, in one process (what `make reproduce` runs).

python experiments/reproduce.py                                    # 5 studies, 10 seeds, ledger
python experiments/reproduce.py --studies "lr_sweep annealing" claims.seeds=3 \
    tracking.uri=sqlite:////abs/store.db              # seeds 0-2 (lr_sweep 0-5)
python experiments/reproduce.py --datasets all --stability         # make evidence

With ``--datasets`` every study runs once per data set (``data=<name>``; "all": the eight of
``config.EVIDENCE_DATASETS``) and the ledger judges every training claim per data set
(``claims.datasets``); with ``--stability`` every study runs seeds 0 .. 2 x claims.seeds - 1 and
the ledger judges both halves (``claims.stability=true``). Each study on each data set is a
unit: the terminal gets one line per unit with the time left (``xent_tf.launch.evidence``),
the jobs' lines and reports go to their logs and MLflow.

Each study is what ``python experiments/run.py -m +experiment=STUDY +resume=matching OVERRIDES
STUDY_ARGS`` runs (the same Hydra sweep, callbacks, launcher, outputs and MLflow records), then
the ledger is ``python experiments/run.py +experiment=claims OVERRIDES``. One process runs them
all with one pool of worker processes for every study and the ledger: the workers import
TensorFlow and MLflow once, not once per step, and do so while the first study is being planned.
"""

from __future__ import annotations

import os

# Quiet TensorFlow's C++ start-up chatter; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import functools
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# Several multiruns in one process need Hydra's own runner: hydra.main runs one app per process
# and the compose API runs no sweep. No public API does it (pinned by uv.lock).
from hydra._internal.hydra import Hydra
from hydra._internal.utils import _run_app, create_config_search_path, run_and_report
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from run import task  # experiments/run.py, the same task function (this script's directory)

from xent_tf.claims.records import EarlyMeasurements
from xent_tf.claims.runner import check_datasets
from xent_tf.claims.studies import STUDIES as STUDY_SPECS
from xent_tf.config import EVIDENCE_DATASETS, Config, expand_datasets, to_config
from xent_tf.launch.callback import count_sweep_jobs
from xent_tf.launch.evidence import EvidenceClock, Unit, read_outcome, unit_line
from xent_tf.launch.worker_pool import WorkerDeath, keep_workers, preload_job_modules

if TYPE_CHECKING:  # MLflow is imported once a study needs it, not before the workers start
    from xent_tf.track.reading import ChildrenRead

STUDIES = tuple(STUDY_SPECS)  # the comparison studies, in the registry's order
# The studies the ledger judges claims on (lr_range_test trains with the range test's own
# rates, a study of its own: `--studies lr_range_test` runs it).
CLAIM_STUDIES = tuple(name for name, spec in STUDY_SPECS.items() if spec.claims)
# The order they run in by default: the study whose 240 jobs take longest to plan first (its
# planning overlaps the workers' start), the one whose report is quickest last (the ledger
# waits for the last report; the others are built while the next study trains). lr_sweep's
# report is the slowest (it reads every run's per-step loss series for C13 and C15): second.
DEFAULT_ORDER = ("mse_vs_ce", "lr_sweep", "binary_vs_categorical", "annealing")
assert sorted(DEFAULT_ORDER) == sorted(CLAIM_STUDIES), "DEFAULT_ORDER: every claim's study once"
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
# run.py's job name (Hydra names it after the script): the same log files and output paths.
JOB_NAME = "run"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line: which studies, their own overrides, and the overrides of every step."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--studies",
        default=" ".join(DEFAULT_ORDER),
        help="studies to run, in order, separated by spaces or commas (default: the ledger's, "
        f"{', '.join(DEFAULT_ORDER)})",
    )
    parser.add_argument(
        "--study-args",
        default="",
        help='overrides for the study sweeps only, as one string (e.g. "seed=0,1,2")',
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes every study and the ledger share (default 2; they replace the "
        "replica launcher's hydra.launcher.n_jobs)",
    )
    parser.add_argument(
        "--datasets",
        default="",
        help="run every study once per data set (data=NAME), separated by spaces or commas, "
        f"and judge every training claim per data set; 'all': {', '.join(EVIDENCE_DATASETS)}",
    )
    parser.add_argument(
        "--stability",
        action="store_true",
        help="run seeds 0 .. 2 x claims.seeds - 1 and judge each half (claims.stability=true)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every step")
    args = parser.parse_args(argv)
    args.studies = [s for s in args.studies.replace(",", " ").split() if s]
    unknown = [s for s in args.studies if s not in STUDIES]
    if unknown:
        parser.error(f"unknown studies {unknown}; the studies are {list(STUDIES)}")
    args.datasets = expand_datasets(args.datasets.replace(",", " ").split())
    try:  # before anything runs: an unknown name, and the data sets that exist
        check_datasets(args.datasets)
    except ValueError as error:
        parser.error(str(error).replace("claims.datasets=", "--datasets "))
    if len(set(args.datasets)) < len(args.datasets):
        parser.error(f"--datasets names a data set twice: {args.datasets}")
    if args.workers < 1:
        parser.error(f"--workers={args.workers} must be >= 1")
    args.study_args = shlex.split(args.study_args)
    return args


def _run(app: Hydra, overrides: list[str], multirun: bool) -> None:
    """One step as run.py's command line runs it (``-m`` for a sweep): Hydra's own driver."""
    _run_app(
        run=not multirun,
        multirun=multirun,
        mode=run_and_report(lambda: app.get_mode(config_name="config", overrides=overrides)),
        hydra=app,
        config_name="config",
        task_function=task,
        overrides=overrides,
    )


def _hydra_app() -> Hydra:
    """Hydra, set up as run.py's ``@hydra.main`` sets it up (same configs, same job name)."""
    return run_and_report(
        lambda: Hydra.create_main_hydra2(
            task_name=JOB_NAME, config_search_path=create_config_search_path(str(CONFIG_DIR))
        )
    )


# Overrides of every step that are not the studies' (the ledger's own; the study runner sets
# the store and the seeds itself).
_NOT_FOR_STUDIES = ("claims.", "+claims.", "tracking.uri=", "seed=", "hydra.")


def ledger_overrides(overrides: Sequence[str]) -> list[str]:
    """The ledger step's overrides: those of every step, and (``claims.study_overrides``) the
    ones that shaped the studies, so the ledger looks for (and would run) the studies they
    made; e.g. ``+debug=tiny`` studies are found as tiny ones, not run again at full size."""
    if any(o.startswith("claims.study_overrides=") for o in overrides):
        return list(overrides)  # the user said which
    for_studies = [o for o in overrides if not o.startswith(_NOT_FOR_STUDIES)]
    quoted = ["'" + o.replace("\\", "\\\\").replace("'", "\\'") + "'" for o in for_studies]
    return [*overrides, f"claims.study_overrides=[{','.join(quoted)}]"]


def _ledger(
    overrides: list[str], early: EarlyMeasurements | None, reads: Sequence[ChildrenRead] = ()
) -> None:
    """The claims ledger's step (run in a worker, which has imported TensorFlow already), with
    what was measured for it ahead (used only if measured with the ledger's own config) and
    the studies' runs as their reports read them (``reading.hand_over_reads``)."""
    from xent_tf.claims.ledger import hand_over_early
    from xent_tf.track.reading import hand_over_reads

    GlobalHydra.instance().clear()  # the studies' jobs set the worker's Hydra to theirs
    hand_over_early(early)
    hand_over_reads(reads)
    _run(_hydra_app(), ["+experiment=claims", *ledger_overrides(overrides)], multirun=False)


def _measure_early(
    app: Hydra, overrides: list[str]
) -> tuple[list[Callable[[], EarlyMeasurements]], Config]:
    """The ledger's work that needs no study, as two tasks for workers to do while the studies
    train: its on-the-spot claims, and its reference run and study definitions
    (``ledger.measure_exact_early``, ``ledger.prepare_reads_early``); and its config, composed
    as the ledger's step composes it."""
    composed = app.compose_config(
        "config", ["+experiment=claims", *ledger_overrides(overrides)], run_mode=RunMode.RUN
    )
    config = to_config(composed)
    reference_dir = Path("outputs") / f"reference-for-claims-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    return [
        functools.partial(_in_ledger, "measure_exact_early", config),
        functools.partial(_in_ledger, "prepare_reads_early", config, reference_dir.resolve()),
    ], config


def _in_ledger(function: str, *args: object) -> EarlyMeasurements:
    """In a worker: ``xent_tf.claims.ledger.<function>(*args)`` (imported there: the claims
    import TensorFlow, which this process never does)."""
    from xent_tf.claims import ledger

    measured: EarlyMeasurements = getattr(ledger, function)(*args)
    return measured


def _ledger_worker_died(_: int, death: WorkerDeath) -> None:
    raise SystemExit(f"the claims ledger's process ended before it finished: {death.description}")


SWEEP_DIR_KEY = "hydra.sweep.dir="


def study_overrides(study: str, overrides: Sequence[str]) -> list[str]:
    """The overrides of every step, for one study's sweep: a sweep directory given for all
    (``hydra.sweep.dir=D``) becomes ``D/STUDY``, since a sweep directory holds one study."""
    return [f"{o}/{study}" if o.startswith(SWEEP_DIR_KEY) else o for o in overrides]


def ledger_step_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides of every step, plus what the ledger needs to know about the studies'
    data sets and seed sets (``--datasets``, ``--stability``)."""
    extra = []
    if args.datasets:
        extra.append(f"claims.datasets=[{','.join(args.datasets)}]")
    if args.stability:
        extra.append("claims.stability=true")
    return [*args.overrides, *extra]


def seed_override(ledger: Config, study_args: Sequence[str], study: str) -> list[str]:
    """A study's seeds as the ledger will judge them (``seed=range(n)``: claims.seeds, twice
    that with claims.stability, times the study's ``seed_factor``: lr_sweep's C13 picks its
    roles on half of them), unless the study arguments name seeds themselves."""
    if any(a.startswith("seed=") for a in study_args):
        return []
    sets = 2 if ledger.claims.stability else 1
    factor = STUDY_SPECS[study].seed_factor
    return [f"seed=range({sets * ledger.claims.seeds * factor})"]


def _unit_overrides(study: str, dataset: str, args: argparse.Namespace, stamp: str) -> list[str]:
    """One unit's sweep: the study on the data set, in a sweep directory of its own, the
    jobs' lines and report off the terminal."""
    base = next(
        (o.removeprefix(SWEEP_DIR_KEY) for o in args.overrides if o.startswith(SWEEP_DIR_KEY)),
        f"multirun/evidence/{stamp}",
    )
    every = [o for o in args.overrides if not o.startswith(SWEEP_DIR_KEY)]
    return [
        f"+experiment={study}",
        "+resume=matching",
        f"data={dataset}",
        f"{SWEEP_DIR_KEY}{base}/{dataset}/{study}",
        "+hydra.callbacks.mlflow_sweep.job_lines=false",
        "hydra/hydra_logging=warnings",
        *every,
    ]


def plan_units(
    app: Hydra, args: argparse.Namespace, stamp: str, seeds: Callable[[str], list[str]]
) -> list[tuple[Unit, list[str]]]:
    """Every study on every data set, each with its jobs and steps per job (for the time left)
    and its overrides: data set by data set, studies in ``args.studies``'s order, and data sets
    of one shape (features, classes) next to each other, in order of first appearance: their
    replica batches share graphs, which a worker's kept trainers then reuse
    (``replicas.reusable_trainer``) before other graphs push them out."""
    from xent_tf.train.data import make_dataset

    steps = {}
    shapes: dict[str, tuple[int, int]] = {}
    for dataset in args.datasets:
        composed = app.compose_config(
            "config", [f"data={dataset}", "loss=ce", *args.overrides], run_mode=RunMode.RUN
        )
        config = to_config(composed)
        data = make_dataset(config.data)
        steps[dataset] = -(-len(data.train) // config.trainer.batch_size) * config.trainer.epochs
        shapes[dataset] = (data.n_features, data.n_classes)
    units = []
    for study in args.studies:
        first = _unit_overrides(study, args.datasets[0], args, stamp)
        composed = app.compose_config(
            "config", [*first, *args.study_args, *seeds(study)], run_mode=RunMode.MULTIRUN
        )
        jobs = count_sweep_jobs(composed) or 0
        for dataset in args.datasets:
            overrides = [
                *_unit_overrides(study, dataset, args, stamp),
                *args.study_args,
                *seeds(study),
            ]
            units.append((Unit(study, dataset, jobs, steps[dataset]), overrides))
    return sorted(units, key=lambda u: dataset_order(args.datasets, shapes).index(u[0].dataset))


def dataset_order(datasets: Sequence[str], shapes: dict[str, tuple[int, int]]) -> list[str]:
    """``datasets`` with those of one shape next to each other, in order of first appearance
    (reference, label_noise, imbalanced: 20 features, 2 classes)."""
    first: dict[tuple[int, int], int] = {}
    for dataset in datasets:
        first.setdefault(shapes[dataset], len(first))
    return sorted(datasets, key=lambda d: first[shapes[d]])


def _run_units(app: Hydra, units: Sequence[tuple[Unit, list[str]]]) -> None:
    """Run each unit's sweep, printing its line with the time left."""
    clock = EvidenceClock([unit for unit, _ in units])
    for number, (unit, overrides) in enumerate(units, start=1):
        started = time.perf_counter()
        _run(app, overrides, multirun=True)
        seconds = time.perf_counter() - started
        sweep_dir = next(o for o in overrides if o.startswith(SWEEP_DIR_KEY))
        outcome = read_outcome(Path(sweep_dir.removeprefix(SWEEP_DIR_KEY)), unit.jobs)
        clock.finish(outcome.trained, unit.steps, seconds)
        print(unit_line(number, clock, unit, outcome, seconds), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the studies, then the ledger; the first failing step stops it (exit code 1)."""
    args = parse_args(argv)
    app = _hydra_app()
    ledger_args = ledger_step_overrides(args)
    with keep_workers(args.workers, preload_job_modules) as pool:
        early_tasks, ledger_config = _measure_early(app, ledger_args)
        early = [pool.submit(task) for task in early_tasks]

        def seeds(study: str) -> list[str]:
            # The seeds the ledger judges (claims.seeds; lr_sweep twice as many), unless the
            # study arguments name seeds.
            return seed_override(ledger_config, args.study_args, study)

        if args.datasets:
            stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
            _run_units(app, plan_units(app, args, stamp, seeds))
        for study in [] if args.datasets else args.studies:
            overrides = [
                f"+experiment={study}",
                "+resume=matching",
                *study_overrides(study, args.overrides),
            ]
            _run(app, [*overrides, *args.study_args, *seeds(study)], multirun=True)
        try:
            # The studies' reports (the ledger reads their finished parent runs), and the
            # ledger's own early measurements.
            done = pool.drain()
            measured_early = done[early[0]].combined(done[early[1]])
        except Exception as error:
            raise SystemExit(
                f"a study's report or the ledger's early measurements failed: {error}"
            ) from error
        from xent_tf.track.reading import ChildrenRead

        reads = [read for read in done.values() if isinstance(read, ChildrenRead)]
        pool.run(
            [functools.partial(_ledger, ledger_args, measured_early, reads)],
            _ledger_worker_died,
        )


if __name__ == "__main__":
    main()
