"""`make evidence`: the units (every study on every data set), their console lines and time
left, the command line's checks, and the ledger's per-data-set headline."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from xent_tf.claims import from_studies, ledger
from xent_tf.claims.comparison import Finding, Verdict
from xent_tf.claims.ledger_render import ledger_json, render_html, render_markdown, render_terminal
from xent_tf.claims.records import ClaimResult, Ledger, StudyEvidence
from xent_tf.claims.runner import StudyDefinition
from xent_tf.claims.studies import ClaimCheck, ClaimPart
from xent_tf.config import EVIDENCE_DATASETS, ClaimsConfig, expand_datasets
from xent_tf.launch.evidence import EvidenceClock, Unit, UnitOutcome, read_outcome, unit_line
from xent_tf.track.reading import StudyRun

ROOT = Path(__file__).resolve().parent.parent
HOLDS, CONTRADICTED, NOT_APPLICABLE = Verdict.HOLDS, Verdict.CONTRADICTED, Verdict.NOT_APPLICABLE


@pytest.fixture(scope="module")
def reproduce() -> Iterator[ModuleType]:
    """experiments/reproduce.py as a module (it imports run.py from its own directory)."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import reproduce as module

        yield module
    finally:
        sys.path.remove(str(ROOT / "experiments"))


def test_all_names_the_eight_data_sets_in_order() -> None:
    assert expand_datasets("all") == list(EVIDENCE_DATASETS)
    assert expand_datasets(["wine", "all"])[:2] == ["wine", "reference"]
    assert expand_datasets("wine") == ["wine"] and expand_datasets("") == []
    assert ClaimsConfig(datasets="all").datasets == list(EVIDENCE_DATASETS)
    with pytest.raises(ValueError, match=r"names \['wine'\] twice"):
        ClaimsConfig(datasets=["wine", "wine"])


def test_an_unknown_data_set_is_refused_before_anything_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "reproduce.py"), "--datasets", "wine,nope"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--datasets ['wine', 'nope'] names unknown data set(s) ['nope']; known: " in (
        result.stderr
    )
    for name in EVIDENCE_DATASETS:
        assert name in result.stderr.split("known: ")[1]
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "mlflow.db").exists()


def test_the_studies_run_the_seeds_the_ledger_judges(reproduce: ModuleType) -> None:
    args = reproduce.parse_args(["--datasets", "all", "--stability", "claims.seeds=3"])
    assert args.datasets == list(EVIDENCE_DATASETS)
    assert reproduce.ledger_step_overrides(args) == [
        "claims.seeds=3",
        f"claims.datasets=[{','.join(EVIDENCE_DATASETS)}]",
        "claims.stability=true",
    ]
    settings = ClaimsConfig(seeds=3, stability=True)

    class Ledgerish:
        claims = settings

    assert reproduce.seed_override(Ledgerish, [], "annealing") == ["seed=range(6)"]
    # lr_sweep runs twice as many (C13: roles on one half, judged on the other)
    assert reproduce.seed_override(Ledgerish, [], "lr_sweep") == ["seed=range(12)"]
    settings.stability = False
    assert reproduce.seed_override(Ledgerish, [], "annealing") == ["seed=range(3)"]
    assert reproduce.seed_override(Ledgerish, [], "lr_sweep") == ["seed=range(6)"]
    # the user's seeds win
    assert reproduce.seed_override(Ledgerish, ["seed=0,1"], "lr_sweep") == []


def test_each_unit_gets_its_own_sweep_directory_and_a_quiet_console(
    reproduce: ModuleType,
) -> None:
    args = reproduce.parse_args(["--datasets", "wine", "hydra.sweep.dir=/out", "seed=0"])
    assert reproduce._unit_overrides("lr_sweep", "wine", args, "STAMP") == [
        "+experiment=lr_sweep",
        "+resume=matching",
        "data=wine",
        "hydra.sweep.dir=/out/wine/lr_sweep",
        "+hydra.callbacks.mlflow_sweep.job_lines=false",
        "hydra/hydra_logging=warnings",
        "seed=0",
    ]
    args = reproduce.parse_args(["--datasets", "wine"])
    assert "hydra.sweep.dir=multirun/evidence/STAMP/wine/lr_sweep" in reproduce._unit_overrides(
        "lr_sweep", "wine", args, "STAMP"
    )


def test_the_time_left_follows_the_fitted_cost_of_jobs_and_steps() -> None:
    # True cost: 0.5 s per job + 0.001 s per job-step.
    units = [Unit("a", "big", 10, 2000), Unit("a", "small", 10, 100), Unit("b", "big", 20, 2000)]
    clock = EvidenceClock(units)
    clock.finish(10, 2000, 10 * 0.5 + 10 * 2000 * 0.001)  # 25 s
    # one step count so far: every second is put on the jobs (25 s / 10 jobs)
    assert clock.rates() == (pytest.approx(2.5), 0.0)
    assert clock.seconds_left() == pytest.approx((10 + 20) * 2.5)
    clock.finish(10, 100, 10 * 0.5 + 10 * 100 * 0.001)  # 6 s
    assert clock.rates() == (pytest.approx(0.5), pytest.approx(0.001))
    assert clock.seconds_left() == pytest.approx(20 * 0.5 + 20 * 2000 * 0.001)  # 50 s
    line = unit_line(2, clock, units[1], UnitOutcome(8, 0, 2), 6.0)
    assert line == (
        "[2/3] a on small: 8 jobs trained (2 left out: not applicable) in 6 s; ETA 50 s"
    )
    clock.finish(0, 2000, 1.0)  # a resumed unit: nothing trained, not fitted
    assert clock.rates() == (pytest.approx(0.5), pytest.approx(0.001))
    assert unit_line(3, clock, units[2], UnitOutcome(0, 20, 0), 1.0) == (
        "[3/3] b on big: 0 jobs trained (20 finished earlier) in 1 s; all units done"
    )


def test_a_units_outcome_comes_from_its_sweep_directory(tmp_path: Path) -> None:
    assert read_outcome(tmp_path, 30) == UnitOutcome(30, 0, 0)
    (tmp_path / "finished_jobs.json").write_text(json.dumps({"h1": {}, "h2": {}}))
    (tmp_path / ".progress.json").write_text(json.dumps({"done": 30, "left_out": 10}))
    assert read_outcome(tmp_path, 30) == UnitOutcome(18, 2, 10)


def _row(verdict: Verdict, run: str = "run") -> ClaimResult:
    """C13 on one data set from a study whose one (exact) part has ``verdict``."""
    part = ClaimPart("a rate", Finding(verdict, "rule", "measured"))
    evidence = StudyEvidence(
        "lr_sweep",
        (ClaimCheck("C13", "s", verdict, "rule", [part]),),
        StudyRun(run, "7", "lr_sweep", "lr_sweep", "FINISHED", 0),
        seeds=(0, 1),
    )
    return from_studies.evaluate_study_claim("C13", evidence)


def test_a_data_set_the_claim_does_not_apply_to_is_not_counted() -> None:
    per_dataset = {"a": _row(HOLDS), "b": _row(NOT_APPLICABLE), "c": _row(HOLDS)}
    combined = ledger.combine_datasets("C13", per_dataset)
    assert per_dataset["b"].verdict == NOT_APPLICABLE  # every check of it: not applicable
    assert (combined.verdict, combined.holds_on) == (HOLDS, "2 of 2 (1 not applicable)")
    assert combined.measured.startswith("holds on 2 of 2 (1 not applicable) data sets.")
    with_contradiction = {**per_dataset, "d": _row(CONTRADICTED)}
    combined = ledger.combine_datasets("C13", with_contradiction)
    assert (combined.verdict, combined.holds_on) == (CONTRADICTED, "2 of 3 (1 not applicable)")
    nowhere = ledger.combine_datasets("C13", {"a": _row(NOT_APPLICABLE)})
    assert (nowhere.verdict, nowhere.holds_on) == (NOT_APPLICABLE, "not applicable")


def test_the_per_data_set_table_is_the_headline_with_links_to_the_sweeps() -> None:
    per_dataset = {"moons": _row(HOLDS, "aaaa1111"), "wine": _row(NOT_APPLICABLE, "bbbb2222")}
    c13 = ledger.combine_datasets("C13", per_dataset)
    studies = tuple(
        StudyEvidence(
            "lr_sweep",
            parent=StudyRun(run, "7", "lr_sweep", "lr_sweep", "FINISHED", 0),
            tracking_uri="sqlite:///x.db",
            dataset=dataset,
        )
        for dataset, run in (("moons", "aaaa1111"), ("wine", "bbbb2222"))
    )
    result = Ledger((c13,), studies, 2, datasets=("moons", "wine"))
    url = "http://127.0.0.1:5000/#/experiments/7/runs/{}/model-metrics"
    terminal = render_terminal(result)
    assert terminal.index("== Claims per data set (2 data sets) ==") < terminal.index(
        "== Claims ledger =="
    )
    assert f"  lr_sweep on moons: sweep aaaa1111 {url.format('aaaa1111')}" in terminal
    # A cell wraps between words, never inside one: "holds on" is as wide as "applicable)".
    table = terminal[terminal.index("claim |") :].splitlines()
    assert table[:6] == [
        "claim | moons        | wine         | holds on    | verdict",
        "------+--------------+--------------+-------------+-------------",
        "C13   | holds        | not          | 1 of 1 (1   | holds",
        "      |              | applicable   | not         |",
        "      |              |              | applicable) |",
        "------+--------------+--------------+-------------+-------------",
    ]
    markdown = render_markdown(result)
    assert markdown.index("## Per data set") < markdown.index("## Every claim")
    assert (
        f"| C13 | [holds]({url.format('aaaa1111')}) | [not applicable]({url.format('bbbb2222')})"
        " | 1 of 1 (1 not applicable) | holds |" in markdown
    )
    assert (
        f"| lr_sweep | [sweep aaaa1111]({url.format('aaaa1111')}) | "
        f"[sweep bbbb2222]({url.format('bbbb2222')}) |" in markdown
    )
    page = render_html(result)
    assert f"<td class='holds'><a href=\"{url.format('aaaa1111')}\">holds</a></td>" in page
    assert f"<td class='not-applicable'><a href=\"{url.format('bbbb2222')}\">" in page
    data = ledger_json(result)
    claims = data["claims"]
    assert isinstance(claims, list)
    assert claims[0]["per_dataset_sweeps"] == {
        "moons": url.format("aaaa1111"),
        "wine": url.format("bbbb2222"),
    }
    assert ledger.dataset_tags([c13]) == {
        "holds_on.C13": "1 of 1 (1 not applicable)",
        "verdict.C13.moons": "holds",
        "verdict.C13.wine": "not applicable",
    }


def test_data_sets_of_one_shape_run_next_to_each_other(reproduce: ModuleType) -> None:
    shapes = {
        "reference": (20, 2),
        "wine": (13, 3),
        "moons": (2, 2),
        "label_noise": (20, 2),
        "circles": (2, 2),
    }
    assert reproduce.dataset_order(list(shapes), shapes) == [
        "reference",
        "label_noise",
        "wine",
        "moons",
        "circles",
    ]


def test_the_ledger_reads_each_sweep_once_across_data_sets_and_seed_sets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from xent_tf.track import reading
    from xent_tf.track.run_record import RunRecord

    # Three sweeps of lr_sweep, newest first, on data sets c, b, a (none usable: 1 seed each).
    parents = [
        StudyRun(f"p{d}", "7", "lr_sweep", "lr_sweep", "FINISHED", 3 - i)
        for i, d in enumerate("cba")
    ]
    fetched: list[str] = []

    def fetch(uri: str, parent: StudyRun, metrics: object) -> list[RunRecord]:
        fetched.append(parent.run_id)
        params = {"data.name": parent.run_id[1], "optimizer.learning_rate": "0.1"}
        return [RunRecord(f"{parent.run_id}-0", params, 0, "FINISHED", {}, {})]

    monkeypatch.setattr(reading, "study_parents", lambda uri, study: parents)
    monkeypatch.setattr(reading, "fetch_children", fetch)
    reads: dict[str, list[RunRecord]] = {}
    for dataset in "abc":
        for seeds in ((0, 1), (2, 3)):
            definition = StudyDefinition(sweep={}, params={}, datasets=dataset)
            evidence = from_studies.find_study(
                "lr_sweep", "sqlite:///x.db", seeds, definition, False, None, dataset, reads
            )
            assert evidence.parent is None  # 1 seed: not usable, named in skipped
            assert len(evidence.skipped) == 1 and f"sweep p{dataset}" in evidence.skipped[0]
    assert sorted(fetched) == ["pa", "pb", "pc"]  # once each, not once per lookup (12)
    fetched.clear()
    only_a = StudyDefinition(sweep={}, params={}, datasets="a")
    from_studies.find_study("lr_sweep", "sqlite:///x.db", (0, 1), only_a, False, None)
    assert fetched == ["pc", "pb", "pa"]  # without the shared reads: every sweep again
