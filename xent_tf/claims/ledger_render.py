"""The claims ledger on screen and on disk: terminal table, Markdown, self-contained HTML, JSON.

Kept apart from ``claims`` (which measures and judges); it reads only the record types
(``claims.records``), so there is no import cycle.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

from xent_tf.claims.comparison import PARTS_RULE, Verdict
from xent_tf.claims.records import Ledger, Link, seed_range
from xent_tf.claims.studies import ClaimPart
from xent_tf.report.html_page import html_page


def _count_line(ledger: Ledger) -> str:
    counts = {v: sum(r.verdict == v for r in ledger.results) for v in Verdict}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def _studies_lines(ledger: Ledger) -> list[str]:
    lines = []
    for evidence in ledger.studies:
        lines.append(evidence.describe())
        lines += [f"  {s}" for s in evidence.skipped]
    return lines


def dataset_header(ledger: Ledger) -> list[str]:
    """claim | one column per data set | holds on | verdict."""
    return ["claim", *ledger.datasets, "holds on", "verdict"]


def dataset_rows(ledger: Ledger) -> list[list[str]]:
    """One row per training claim judged per data set: its verdict on each, "holds on N of M"
    and the row's verdict ("-" where a claim was not judged on a data set)."""
    return [
        [
            r.claim,
            *(str(r.on(d) or "-") for d in ledger.datasets),
            r.holds_on,
            str(r.verdict),
        ]
        for r in ledger.results
        if r.per_dataset
    ]


def stability_rows(ledger: Ledger) -> list[list[str]]:
    """claim | verdict on the first seed set | on the second | agree | ledger verdict."""
    return [
        [
            f"{row.claim} on {row.dataset}" if row.dataset else row.claim,
            f"{row.verdicts[0]} (seeds {seed_range(row.seed_sets[0])})",
            f"{row.verdicts[1]} (seeds {seed_range(row.seed_sets[1])})",
            "yes" if row.agree else "no",
            str(row.verdict),
        ]
        for row in ledger.stability
    ]


def sweep_links(ledger: Ledger) -> dict[str, dict[str, tuple[Link, ...]]]:
    """{study: {data set: links to its sweep parent run(s)}}: the runs the per-data-set table
    rests on (one sweep usually holds both seed sets; a study with no usable sweep has none)."""
    table: dict[str, dict[str, tuple[Link, ...]]] = {}
    for evidence in ledger.studies:
        if not evidence.dataset:
            continue
        links = table.setdefault(evidence.study, {}).setdefault(evidence.dataset, ())
        link = evidence.parent_link()
        if link is not None and link not in links:
            table[evidence.study][evidence.dataset] = (*links, link)
    return table


def sweep_header(ledger: Ledger) -> list[str]:
    """study | one column per data set."""
    return ["study", *ledger.datasets]


STABILITY_HEADER = ["claim", "first seed set", "second seed set", "agree", "verdict"]
DATASETS_NOTE = (
    "a row holds if it holds on every data set it applies to, is contradicted if contradicted on "
    "any (Holm's correction over every data set's parts), else inconclusive; 'not applicable' "
    "data sets are not counted in 'holds on'"
)


def _wrap_table(header: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int]) -> str:
    def render(cells: Sequence[str]) -> list[str]:
        wrapped = [textwrap.wrap(c, w) or [""] for c, w in zip(cells, widths, strict=True)]
        height = max(len(w) for w in wrapped)
        return [
            " | ".join(
                (w[i] if i < len(w) else "").ljust(width)
                for w, width in zip(wrapped, widths, strict=True)
            ).rstrip()
            for i in range(height)
        ]

    rule = "-+-".join("-" * w for w in widths)
    lines = [*render(header), rule]
    for row in rows:
        lines += [*render(row), rule]
    return "\n".join(lines)


def _terminal_headline(ledger: Ledger) -> list[str]:
    """The per-data-set table and the sweeps it rests on (with ``claims.datasets``)."""
    header = dataset_header(ledger)
    rows = dataset_rows(ledger)
    least = [5, *(max(12, len(d)) for d in ledger.datasets), 8, 12]
    # A column is at least as wide as its longest word: a cell wraps between words, never
    # inside one ("3 of 6 (2 not applicable)" in "holds on").
    widths = [
        max([width, *(len(word) for row in rows for word in row[i].split())])
        for i, width in enumerate(least)
    ]
    sweeps = [
        f"  {study} on {dataset}: " + ", ".join(f"{link.label} {link.url}" for link in links)
        if links
        else f"  {study} on {dataset}: no usable sweep"
        for study, row in sweep_links(ledger).items()
        for dataset, links in row.items()
    ]
    return [
        f"== Claims per data set ({len(ledger.datasets)} data sets) ==\n"
        + "each training claim's studies run on each data set; "
        + DATASETS_NOTE
        + ":\n"
        + _wrap_table(header, rows, widths),
        "the sweeps (parent runs) each column rests on:\n" + "\n".join(sweeps),
    ]


def render_terminal(ledger: Ledger, output_dir: Path | None = None) -> str:
    """The ledger table (claim | says | measured | verdict | rule) and what it rests on; with
    ``claims.datasets`` the per-data-set table comes first, as the headline."""
    # The combination rule is the same for every claim: say it once, under the table.
    rows = [
        [r.claim, r.says, r.measured, r.verdict.upper(), r.rule.removesuffix("; " + PARTS_RULE)]
        for r in ledger.results
    ]
    parts = [
        *(_terminal_headline(ledger) if ledger.datasets else []),
        "== Claims ledger ==",
        _wrap_table(
            ["claim", "what the tutorial says", "what was measured", "verdict", "rule"],
            rows,
            [5, 34, 50, 12, 40],
        ),
        f"verdicts: {_count_line(ledger)}. A claim with several parts: {PARTS_RULE}.",
        f"rules: {ledger.protocol} (docs/CLAIMS.md, Protocol).",
    ]
    if ledger.stability:
        parts.append(
            "stability (each training claim on two disjoint seed sets):\n"
            + _wrap_table(STABILITY_HEADER, stability_rows(ledger), [16, 34, 34, 5, 12])
        )
    details = []
    for r in ledger.results:
        for p in r.parts:
            line = f"{r.claim:<4} {p.verdict.verdict:<12} {p.context}: {p.verdict.measured}"
            details.append(textwrap.fill(line, 140, subsequent_indent=" " * 18))
    parts.append(
        "the parts each verdict combines (rules: claims.md / claims.html):\n" + "\n".join(details)
    )
    notes = [f"{r.claim}: {n}" for r in ledger.results for n in r.notes]
    if notes:
        parts.append(
            "notes:\n" + "\n".join(textwrap.fill(n, 140, subsequent_indent="  ") for n in notes)
        )
    if ledger.studies:
        parts.append("studies:\n" + "\n".join(f"  {line}" for line in _studies_lines(ledger)))
    where = []
    if output_dir is not None:
        where.append(f"files: {output_dir / 'claims.md'}, claims.html, claims.json")
    if ledger.run_url:
        where.append(f"MLflow ledger run {ledger.run_id} (experiment 'claims'): {ledger.run_url}")
    parts += where
    return "\n\n".join(parts)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_links(links: Sequence[Link]) -> str:
    return ", ".join(f"[{link.label}]({link.url})" for link in links)


def _md_link(text: str, link: Link | None) -> str:
    return f"[{text}]({link.url})" if link is not None else text


def _linked_dataset_rows(
    ledger: Ledger, linked: Callable[[str, Link | None], str]
) -> list[list[str]]:
    """``dataset_rows`` with each data set's verdict linked to its study's sweep."""
    rows = []
    for r, row in zip(
        [r for r in ledger.results if r.per_dataset], dataset_rows(ledger), strict=True
    ):
        links = {d.dataset: d.link for d in r.per_dataset}
        cells = [linked(c, links.get(d)) for c, d in zip(row[1:-2], ledger.datasets, strict=True)]
        rows.append([row[0], *cells, *row[-2:]])
    return rows


def render_markdown(ledger: Ledger) -> str:
    """The ledger as Markdown: summary table, then each claim's parts with their rules."""
    lines = [
        "# Claims ledger",
        "",
        f"{len(ledger.results)} claims of CLAIMS.md: {_count_line(ledger)}. Every verdict is a "
        "rule applied to the numbers measured for it; the rule is shown next to it.",
        "",
        f"Rules: {ledger.protocol} (docs/CLAIMS.md, Protocol).",
    ]
    if ledger.datasets:
        header = dataset_header(ledger)
        lines += [
            "",
            "## Per data set",
            "",
            f"Each training claim's studies run on each data set; {DATASETS_NOTE}. Each verdict "
            "links to the sweep it comes from.",
            "",
            "| " + " | ".join(header) + " |",
        ]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(row) + " |" for row in _linked_dataset_rows(ledger, _md_link)]
        sweeps = sweep_links(ledger)
        lines += ["", "Sweeps:", "", "| " + " | ".join(sweep_header(ledger)) + " |"]
        lines.append("|" + "---|" * len(sweep_header(ledger)))
        lines += [
            f"| {study} | "
            + " | ".join(_md_links(row.get(d, ())) or "-" for d in ledger.datasets)
            + " |"
            for study, row in sweeps.items()
        ]
    lines += [
        *(["", "## Every claim"] if ledger.datasets else []),
        "",
        "| claim | what the tutorial says | what was measured | verdict | rule | from |",
        "|---|---|---|---|---|---|",
    ]
    for r in ledger.results:
        source = r.source or "computed in this ledger run"
        lines.append(
            f"| {r.claim} {_md(r.title)} | {_md(r.says)} | {_md(r.measured)} | "
            f"**{r.verdict}** | {_md(r.rule)} | {_md(source)} {_md_links(ledger.links(r))} |"
        )
    if ledger.stability:
        lines += ["", "## Stability", "", "| " + " | ".join(STABILITY_HEADER) + " |"]
        lines.append("|" + "---|" * len(STABILITY_HEADER))
        lines += ["| " + " | ".join(row) + " |" for row in stability_rows(ledger)]
    if ledger.studies:
        lines += ["", "## Studies", ""] + [f"- {_md(s)}" for s in _studies_lines(ledger)]
    lines += ["", "## Details"]
    for r in ledger.results:
        lines += ["", f"### {r.claim} {r.title}: {r.verdict}", "", f"*Says:* {r.says}", ""]
        lines += [f"> {n}" for n in r.notes]
        if r.notes:
            lines.append("")
        lines += ["| part | verdict | measured | rule |", "|---|---|---|---|"]
        lines += [
            f"| {_md(p.context)} | {p.verdict.verdict} | {_md(p.verdict.measured)} | "
            f"{_md(p.verdict.rule)} |"
            for p in r.parts
        ]
        if ledger.links(r):
            lines += ["", "Runs: " + _md_links(ledger.links(r))]
    if ledger.run_url:
        lines += ["", f"Ledger run: [{ledger.run_id}]({ledger.run_url})"]
    return "\n".join(lines) + "\n"


_VERDICT_NAMES = {str(v) for v in Verdict}


def _css(verdict: str) -> str:
    """A verdict's CSS class (``html_page``): spaces become hyphens."""
    return str(verdict).replace(" ", "-")


def _html_links(links: Sequence[Link]) -> str:
    return "<br>".join(
        f'<a href="{html.escape(link.url)}">{html.escape(link.label)}</a>' for link in links
    )


def render_html(ledger: Ledger) -> str:
    """A self-contained HTML page (inline CSS, no external files) the MLflow UI shows inline."""
    e = html.escape
    rows = []
    for r in ledger.results:
        source = e(r.source or "computed in this ledger run")
        rows.append(
            f"<tr><td><a href='#{r.claim}'>{r.claim}</a> {e(r.title)}</td><td>{e(r.says)}</td>"
            f"<td>{e(r.measured)}</td><td class='{_css(r.verdict)}'>{r.verdict}</td>"
            f"<td>{e(r.rule)}</td><td>{source}<br>{_html_links(ledger.links(r))}</td></tr>"
        )
    body = [
        "<h1>Claims ledger</h1>",
        f"<p>{len(ledger.results)} claims of CLAIMS.md: {e(_count_line(ledger))}. Every verdict "
        "is a rule applied to the numbers measured for it; the rule is shown next to it.</p>",
        f"<p class='protocol'>Rules: {e(ledger.protocol)} (docs/CLAIMS.md, Protocol).</p>",
    ]
    if ledger.datasets:
        links = {r.claim: {d.dataset: d.link for d in r.per_dataset} for r in ledger.results}

        def cell(claim: str, column: str, text: str) -> str:
            link = links.get(claim, {}).get(column)
            shown = f'<a href="{e(link.url)}">{e(text)}</a>' if link is not None else e(text)
            kind = f" class='{_css(text)}'" if text in _VERDICT_NAMES else ""
            return f"<td{kind}>{shown}</td>"

        columns = ["claim", *ledger.datasets, "holds on", "verdict"]
        body.append(
            f"<h2>Per data set</h2><p>Each training claim's studies run on each data set; "
            f"{e(DATASETS_NOTE)}. Each verdict links to the sweep it comes from.</p>"
            "<table><thead><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in dataset_header(ledger))
            + "</tr></thead><tbody>"
            + "".join(
                "<tr>"
                + "".join(cell(row[0], c, t) for c, t in zip(columns, row, strict=True))
                + "</tr>"
                for row in dataset_rows(ledger)
            )
            + "</tbody></table><h3>Sweeps</h3><table><thead><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in sweep_header(ledger))
            + "</tr></thead><tbody>"
            + "".join(
                f"<tr><td>{e(study)}</td>"
                + "".join(f"<td>{_html_links(row.get(d, ())) or '-'}</td>" for d in ledger.datasets)
                + "</tr>"
                for study, row in sweep_links(ledger).items()
            )
            + "</tbody></table>"
        )
    body.append(
        ("<h2>Every claim</h2>" if ledger.datasets else "")
        + "<table><thead><tr><th>claim</th><th>what the tutorial says</th><th>what was measured"
        "</th><th>verdict</th><th>rule</th><th>from</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )
    if ledger.stability:
        body.append(
            "<h2>Stability</h2><table><thead><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in STABILITY_HEADER)
            + "</tr></thead><tbody>"
            + "".join(
                "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                for row in stability_rows(ledger)
            )
            + "</tbody></table>"
        )
    if ledger.studies:
        body.append(
            "<h2>Studies</h2><ul>"
            + "".join(f"<li>{e(s)}</li>" for s in _studies_lines(ledger))
            + "</ul>"
        )
    body.append("<h2>Details</h2>")
    for r in ledger.results:
        body.append(
            f"<h3 id='{r.claim}'>{r.claim} {e(r.title)}: {r.verdict}</h3><p><em>Says:</em> "
            f"{e(r.says)}</p>"
        )
        body += [f"<blockquote>{e(n)}</blockquote>" for n in r.notes]
        parts = "".join(
            f"<tr><td>{e(p.context)}</td><td class='{_css(p.verdict.verdict)}'>{p.verdict.verdict}"
            f"</td><td>{e(p.verdict.measured)}</td><td>{e(p.verdict.rule)}</td></tr>"
            for p in r.parts
        )
        body.append(
            "<table><thead><tr><th>part</th><th>verdict</th><th>measured</th><th>rule</th></tr>"
            f"</thead><tbody>{parts}</tbody></table>"
        )
        if ledger.links(r):
            body.append(f"<p>Runs: {_html_links(ledger.links(r))}</p>")
    if ledger.run_url:
        body.append(f"<p>Ledger run: <a href='{e(ledger.run_url)}'>{ledger.run_id}</a></p>")
    return html_page("Claims ledger", "".join(body))


def ledger_json(ledger: Ledger) -> dict[str, object]:
    """The ledger as JSON-ready data (every number a verdict rests on is in ``parts``)."""

    def part(p: ClaimPart) -> dict[str, object]:
        return {
            "context": p.context,
            "verdict": p.verdict.verdict,
            "measured": p.verdict.measured,
            "rule": p.verdict.rule,
            "counted": p.counted,
            "p_holds": _json_number(p.verdict.p_holds),
            "p_contradicted": _json_number(p.verdict.p_contradicted),
            "before_correction": (
                str(p.verdict.before_correction) if p.verdict.before_correction else None
            ),
        }

    return {
        "protocol_version": ledger.protocol_version,
        "rules_hash": ledger.rules_hash,
        "tracking_uri": ledger.tracking_uri,
        "ledger_run": {
            "run_id": ledger.run_id,
            "experiment_id": ledger.experiment_id,
            "url": ledger.run_url,
        },
        "seeds_per_set": ledger.seeds,
        "datasets": list(ledger.datasets),
        "stability": [
            {
                "claim": row.claim,
                "dataset": row.dataset,
                "seed_sets": [list(seeds) for seeds in row.seed_sets],
                "verdicts": [str(v) for v in row.verdicts],
                "agree": row.agree,
                "verdict": str(row.verdict),
            }
            for row in ledger.stability
        ],
        "seconds": round(ledger.seconds, 2),
        "claims": [
            {
                "claim": r.claim,
                "title": r.title,
                "says": r.says,
                "measured": r.measured,
                "verdict": r.verdict,
                "rule": r.rule,
                "source": r.source or "computed in this ledger run",
                "links": [dataclasses.asdict(link) for link in ledger.links(r)],
                "notes": list(r.notes),
                "per_dataset": {d.dataset: str(d.verdict) for d in r.per_dataset},
                "per_dataset_sweeps": {d.dataset: d.link.url for d in r.per_dataset if d.link},
                "holds_on": r.holds_on,
                "parts": [part(p) for p in r.parts],
            }
            for r in ledger.results
        ],
        "studies": [
            {
                "study": s.study,
                "dataset": s.dataset,
                "parent_run_id": s.parent.run_id if s.parent else None,
                "parent_run_url": link.url if (link := s.parent_link()) else None,
                "n_seeds": s.n_seeds,
                "seeds": list(s.seeds),
                "config_hash": s.config_hash,
                "date": s.date,
                "n_runs": s.n_runs,
                "ran_now": s.ran_now,
                "skipped": list(s.skipped),
                "problem": s.problem,
                "checks": {c.claim: str(c.verdict) for c in s.checks},
            }
            for s in ledger.studies
        ],
    }


def _json_number(value: float) -> float | None:
    """A p-value for JSON: None for nan (an exact rule has none)."""
    return None if math.isnan(value) else value


def write_ledger(ledger: Ledger, output_dir: Path) -> list[Path]:
    """Writes claims.md, claims.html and claims.json; returns their paths."""
    files = {
        "claims.md": render_markdown(ledger),
        "claims.html": render_html(ledger),
        "claims.json": json.dumps(ledger_json(ledger), indent=2) + "\n",
    }
    paths = []
    for name, text in files.items():
        path = output_dir / name
        path.write_text(text)
        paths.append(path)
    return paths
