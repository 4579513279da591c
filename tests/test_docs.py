"""The README and docs/ point at things that exist: links, anchors, make targets, studies.

A doc that names a file, a heading, a `make` target or a study that is gone has stopped being
true; these tests say which line of which file.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_EXTERNAL = ("http://", "https://", "mailto:")


def _prose(text: str) -> str:
    """The text with code blocks and inline code blanked (brackets there are not links); line
    numbers stay as they were."""
    blank_fence = _FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), text)
    return _INLINE_CODE.sub("", blank_fence)


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for a markdown file's headings ("## When it fails" -> when-it-fails).

    Args:
        text: the file's markdown.

    Returns:
        The anchors of its headings outside code blocks.
    """
    anchors = set()
    for line in _FENCE.sub("", text).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            title = match.group(1).strip().lower().replace("`", "")
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def relative_links(path: Path) -> list[tuple[int, str]]:
    """Every link of a markdown file that is not to another site, with its line number.

    Args:
        path: the markdown file.

    Returns:
        (line number, link target) for each link, in file order.
    """
    found = []
    for number, line in enumerate(_prose(path.read_text()).splitlines(), start=1):
        found += [(number, t) for t in _LINK.findall(line) if not t.startswith(_EXTERNAL)]
    return found


def test_anchors_follow_githubs_rule() -> None:
    text = "# Scale-out: a server\n## When `make reproduce` fails\n```\n# not a heading\n```\n"
    assert heading_anchors(text) == {"scale-out-a-server", "when-make-reproduce-fails"}


def test_links_are_found_outside_code_only(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "see [the guide](docs/G.md#runs) and [site](https://x.org)\n"
        "`[not](a-link.md)`\n```\n[nor](this.md)\n```\n[last](#top)\n"
    )
    assert relative_links(doc) == [(1, "docs/G.md#runs"), (6, "#top")]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for number, target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            broken.append(f"{doc.name}:{number}: {target} (no such file)")
            continue
        if anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text()):
            broken.append(f"{doc.name}:{number}: {target} (no heading #{anchor})")
    assert not broken, "\n".join(broken)


def _makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, re.MULTILINE))


# A command line (a code block's line, or an inline code span) that runs make: optional
# VAR=value assignments, then "make TARGET".
_MAKE_COMMAND = re.compile(r"^\s*(?:\w+=\S+\s+)*make ([a-z][\w-]*)")


def make_targets_named(text: str) -> set[str]:
    """The make targets a markdown file's commands run.

    Args:
        text: the file's markdown.

    Returns:
        The target of every code line or inline code span that is a ``make`` command.
    """
    lines = [line for block in _FENCE.findall(text) for line in block.splitlines()]
    spans = [span.strip("`") for span in _INLINE_CODE.findall(_FENCE.sub("", text))]
    return {m.group(1) for m in map(_MAKE_COMMAND.match, lines + spans) if m}


def test_make_commands_are_told_from_prose() -> None:
    text = (
        "Run `make test`, or `X=1 make server`; `make -f M reproduce` has a flag first.\n"
        "```\nmake bench ARGS=--quick   # the keys that make a study\n  make ui\n```\n"
    )
    assert make_targets_named(text) == {"test", "server", "bench", "ui"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_make_target_named_exists(doc: Path) -> None:
    targets = _makefile_targets()
    named = make_targets_named(doc.read_text())
    assert named - targets == set(), f"{doc.name} names make targets the Makefile lacks"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_experiment_named_exists(doc: Path) -> None:
    named = set(re.findall(r"\+experiment=([a-z][a-z0-9_]*)\b", doc.read_text()))  # not NAME
    configs = {p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml")}
    assert named - configs == set(), f"{doc.name} names studies configs/experiment/ lacks"


# Top-level folders whose files the docs name in `code spans`, e.g. `xent_tf/config.py`.
_TREE_ROOTS = ("xent_tf", "experiments", "configs", "benchmarks", "tests", "tools", "hydra_plugins")
_NAMED_PATH = re.compile(r"`((?:" + "|".join(_TREE_ROOTS) + r")/[\w./-]*)`")
# DESIGN.md is left out: its "first notes" are the original plan, naming paths never built.
_MANUALS = [doc for doc in DOCS if doc.name != "DESIGN.md"]


@pytest.mark.parametrize("doc", _MANUALS, ids=lambda p: p.name)
def test_every_repository_path_named_exists(doc: Path) -> None:
    named = set(_NAMED_PATH.findall(doc.read_text()))
    missing = sorted(path for path in named if not (REPO / path).exists())
    assert not missing, f"{doc.name} names paths that are not in the tree: {missing}"


# --- the README's map of the tree --------------------------------------------------------

_MAP_HEADING = "## Map of the tree"
# Top-level folders a checkout has that are not the project's (virtualenv, outputs, caches).
_NOT_THE_PROJECTS = {".git", ".venv", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def tree_map_entries(readme: str) -> list[str]:
    """The paths the README's map names: a top-level entry starts a line, a child of
    ``xent_tf/`` is indented by two spaces; deeper-indented lines are descriptions.

    Args:
        readme: the README's markdown.

    Returns:
        Repository paths, e.g. ["configs/", "xent_tf/", "xent_tf/train/", ...].
    """
    section = readme.split(_MAP_HEADING, 1)[1]
    block = _FENCE.search(section)
    assert block is not None, "the map of the tree is a code block under its heading"
    entries: list[str] = []
    parent = ""
    for line in block.group(0).splitlines()[1:-1]:
        indent = len(line) - len(line.lstrip(" "))
        name = line.split()[0] if line.strip() else ""
        if not name or indent > 2:
            continue
        if indent == 0:
            parent = name if name.endswith("/") else ""
            entries.append(name)
        else:
            entries.append(parent + name)
    return entries


def test_tree_map_reads_entries_and_children() -> None:
    readme = (
        "## Map of the tree\n\n```\nconfigs/      Hydra configs\n              more words\n"
        "xent_tf/      the library\n  train/      training\n  config.py   schema\n```\n"
    )
    assert tree_map_entries(readme) == [
        "configs/",
        "xent_tf/",
        "xent_tf/train/",
        "xent_tf/config.py",
    ]


def test_the_readmes_map_names_what_is_in_the_tree() -> None:
    entries = tree_map_entries((REPO / "README.md").read_text())
    missing = [e for e in entries if not (REPO / e).exists()]
    assert not missing, f"the README's map names paths that are not in the tree: {missing}"

    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    top_dirs = {path.split("/")[0] + "/" for path in tracked if "/" in path}
    library = REPO / "xent_tf"
    parts = {f"xent_tf/{p.parent.name}/" for p in library.glob("*/__init__.py")}
    modules = {f"xent_tf/{p.name}" for p in library.glob("*.py") if p.name != "__init__.py"}
    wanted = (top_dirs - {d + "/" for d in _NOT_THE_PROJECTS}) | parts | modules
    unlisted = sorted(wanted - set(entries))
    assert not unlisted, f"the README's map of the tree leaves out {unlisted}"
