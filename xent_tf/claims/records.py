"""The ledger's record types: a claim's row, the evidence a study gave, the ledger itself.

Kept apart from the measuring and judging modules so the renderers (``ledger_render``) can
import them without importing the claims' measurements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from xent_tf.claims.comparison import PARTS_RULE, Verdict, combine_verdicts
from xent_tf.claims.protocol import PROTOCOL_VERSION
from xent_tf.claims.registry import CLAIMS, protocol_hash
from xent_tf.claims.runner import StudyDefinition
from xent_tf.claims.studies import ClaimCheck, ClaimPart, adjusted_parts
from xent_tf.track import connection, reading


@dataclass(frozen=True)
class Link:
    """A link to the MLflow run (or runs table) a verdict came from."""

    label: str
    url: str


@dataclass(frozen=True)
class DatasetVerdict:
    """A training claim's verdict on one data set (``claims.datasets``).

    Attributes:
        dataset: the data set's name.
        verdict: the claim's verdict from the studies run on it (NOT_APPLICABLE: the claim
            does not apply to it).
        measured: the key numbers, in one line.
        link: the sweep parent run of the claim's study on this data set (None: no study).
    """

    dataset: str
    verdict: Verdict
    measured: str
    link: Link | None = None


@dataclass(frozen=True)
class ClaimResult:
    """One row of the ledger.

    Attributes:
        claim: "C1" ... "C16".
        title: short name of the claim.
        says: what the tutorial says.
        measured: the key numbers, in one line.
        verdict: the output of ``rule``.
        rule: how the verdict follows from the parts' verdicts or numbers.
        parts: each measured comparison with its own rule and verdict.
        source: where the numbers come from ("" = computed in the ledger run itself).
        links: MLflow runs the numbers come from, besides the ledger run.
        notes: plain-language explanations, e.g. why a claim is wrong as stated.
        measured_here: some of the numbers were measured in the ledger run itself.
        per_dataset: with ``claims.datasets``, the verdict on each data set (training claims).
    """

    claim: str
    title: str
    says: str
    measured: str
    verdict: Verdict
    rule: str
    parts: tuple[ClaimPart, ...] = ()
    source: str = ""
    links: tuple[Link, ...] = ()
    notes: tuple[str, ...] = ()
    measured_here: bool = True
    per_dataset: tuple[DatasetVerdict, ...] = ()

    @property
    def holds_on(self) -> str:
        """ "3 of 4": on how many of the data sets it applies to the claim holds ("" when not
        judged per data set); data sets where it does not apply are named apart."""
        if not self.per_dataset:
            return ""
        applies = [d for d in self.per_dataset if d.verdict != Verdict.NOT_APPLICABLE]
        if not applies:
            return "not applicable"
        holds = sum(d.verdict == Verdict.HOLDS for d in applies)
        text = f"{holds} of {len(applies)}"
        if len(applies) < len(self.per_dataset):
            text += f" ({len(self.per_dataset) - len(applies)} not applicable)"
        return text

    def on(self, dataset: str) -> Verdict | None:
        """The verdict on ``dataset`` (None when not judged on it)."""
        return next((d.verdict for d in self.per_dataset if d.dataset == dataset), None)


def claim_result(
    claim: str,
    parts: Sequence[ClaimPart],
    measured: str,
    rule: str = PARTS_RULE,
    notes: Sequence[str] = (),
    source: str = "",
    links: tuple[Link, ...] = (),
    measured_here: bool = True,
) -> ClaimResult:
    """A claim's row whose verdict combines its parts' verdicts (see ``PARTS_RULE``)."""
    entry = CLAIMS[claim]
    parts = adjusted_parts(parts)
    return ClaimResult(
        claim=claim,
        title=entry.title,
        says=entry.statement,
        measured=measured,
        verdict=combine_verdicts([p.verdict.verdict for p in parts if p.counted]),
        rule=rule,
        parts=tuple(parts),
        source=source,
        links=links,
        notes=tuple(notes),
        measured_here=measured_here,
    )


def contradicted_in(parts: Sequence[ClaimPart], *contexts: str) -> bool:
    return any(p.verdict.verdict == Verdict.CONTRADICTED for p in parts if p.context in contexts)


@dataclass(frozen=True)
class StudyEvidence:
    """What the ledger found (or ran) for one study.

    Attributes:
        study: the study's name (= its MLflow experiment).
        checks: the study's claim checks; empty when no usable study exists.
        parent: the sweep parent run the checks come from.
        n_seeds: distinct seeds among its child runs.
        n_runs: child runs.
        ran_now: the ledger ran this study itself.
        skipped: sweeps in the store that were not used, and why.
        problem: why there are no checks (empty when there are).
        tracking_uri: the store (for links into its UI).
        seeds: the seeds the verdicts use.
        config_hash: hash of the study's defining params (``from_studies.study_definition_hash``).
        date: when the sweep started (UTC).
        dataset: the data set the study was run on for ``claims.datasets`` ("" = its own).
    """

    study: str
    checks: tuple[ClaimCheck, ...] = ()
    parent: reading.StudyRun | None = None
    n_seeds: int = 0
    n_runs: int = 0
    ran_now: bool = False
    skipped: tuple[str, ...] = ()
    problem: str = ""
    tracking_uri: str = ""
    seeds: tuple[int, ...] = ()
    config_hash: str = ""
    date: str = ""
    dataset: str = ""

    def parent_link(self) -> Link | None:
        """A link to the sweep's parent run in the MLflow UI (None: no usable sweep)."""
        if self.parent is None:
            return None
        address = connection.ui_address(self.tracking_uri)
        return Link(
            f"sweep {self.parent.run_id[:8]}",
            connection.run_url(self.parent.experiment_id, self.parent.run_id, address),
        )

    def describe(self) -> str:
        """One line: which sweep, how many seeds and runs, and whether the ledger ran it."""
        name = f"{self.study} on {self.dataset}" if self.dataset else self.study
        if self.parent is None:
            return f"{name}: no usable study ({self.problem})"
        how = "run by this ledger" if self.ran_now else "latest finished study in the store"
        return (
            f"{name}: sweep {self.parent.run_id[:8]} ({how}, {self.date}; config "
            f"{self.config_hash}; seeds {seed_range(self.seeds)}, {self.n_runs} runs)"
        )


def seed_range(seeds: Sequence[int]) -> str:
    """ "0-9" for a contiguous range, else the list."""
    ordered = sorted(seeds)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(str(s) for s in ordered) or "none"


@dataclass(frozen=True)
class StabilityRow:
    """One training claim judged on two disjoint seed sets.

    Attributes:
        claim: the claim id.
        seed_sets: the two seed sets.
        verdicts: the verdict on each.
        dataset: the data set (``claims.datasets``; "" = the studies' own data).
    """

    claim: str
    seed_sets: tuple[tuple[int, ...], tuple[int, ...]]
    verdicts: tuple[Verdict, Verdict]
    dataset: str = ""

    @property
    def agree(self) -> bool:
        return self.verdicts[0] == self.verdicts[1]

    @property
    def verdict(self) -> Verdict:
        """The common verdict, or UNSTABLE when the two seed sets disagree."""
        return self.verdicts[0] if self.agree else Verdict.UNSTABLE


@dataclass(frozen=True)
class Ledger:
    """Every evaluated claim, the studies used, and where the ledger itself is recorded.

    Attributes:
        results: one row per claim, in claim order.
        studies: what was found or run for each needed study.
        seeds: seeds per seed set (a missing study is run with seeds 0 .. seeds - 1).
        tracking_uri: the store ("" with tracking off).
        run_id / experiment_id: the ledger's own MLflow run ("-" with tracking off).
        seconds: wall time.
        stability: with ``claims.stability``, each training claim on two disjoint seed sets.
        datasets: with ``claims.datasets``, the data sets every training claim was judged on.
        protocol_version / rules_hash: the verdict protocol the rules follow
            (``protocol.PROTOCOL_VERSION``, ``registry.protocol_hash``).
    """

    results: tuple[ClaimResult, ...]
    studies: tuple[StudyEvidence, ...] = ()
    seeds: int = 10
    tracking_uri: str = ""
    run_id: str = "-"
    experiment_id: str = "-"
    seconds: float = 0.0
    stability: tuple[StabilityRow, ...] = ()
    datasets: tuple[str, ...] = ()
    protocol_version: str = PROTOCOL_VERSION
    rules_hash: str = field(default_factory=protocol_hash)

    @property
    def protocol(self) -> str:
        """ "protocol 2, rules hash 1a2b3c4d5e6f"."""
        return f"protocol {self.protocol_version}, rules hash {self.rules_hash}"

    @property
    def run_url(self) -> str:
        """The ledger run in the MLflow UI ("" with tracking off)."""
        if self.run_id == "-":
            return ""
        return connection.run_url(
            self.experiment_id, self.run_id, connection.ui_address(self.tracking_uri)
        )

    def links(self, result: ClaimResult) -> tuple[Link, ...]:
        """A result's links, with the ledger run itself when numbers were measured in it."""
        if not result.measured_here or not self.run_url:
            return result.links
        return (*result.links, Link(f"claims run {self.run_id[:8]}", self.run_url))


@dataclass(frozen=True)
class EarlyMeasurements:
    """The claims a ledger measures on the spot, measured ahead of it by the same code (`make
    reproduce` has a worker do it while the studies train), with the config they were
    measured with: the ledger uses them only for a config of the same hash.

    Attributes:
        config_hash: ``resume.training_config_hash`` of the config measured with.
        results: claim id -> its result.
        definitions: study -> its definition (``runner.define_study``) on its own data
            set, and "study@data set" -> on each of ``claims.datasets``
            (``ledger.definition_key``): what the ledger looks for in the store.
    """

    config_hash: str
    results: Mapping[str, ClaimResult]
    definitions: Mapping[str, StudyDefinition] = field(default_factory=dict)

    def combined(self, other: EarlyMeasurements) -> EarlyMeasurements:
        """Both measurements as one (made with the same config).

        Raises:
            ValueError: they were made with different configs.
        """
        if other.config_hash != self.config_hash:
            raise ValueError("early measurements of different configs cannot be combined")
        return EarlyMeasurements(
            self.config_hash,
            {**self.results, **other.results},
            {**self.definitions, **other.definitions},
        )
