"""The fuzz campaign's settings: how many examples, seeded or not, and its tally.

Two Hypothesis profiles:

- ``ci`` (the default, and what CI's ``make test`` gets): each property runs its fixed number of
  examples (``examples``), derandomized (the same cases every run, no flaky CI) and without
  Hypothesis's example database (nothing is written to the checkout);
- ``fuzz`` (``make fuzz``, or ``XENT_FUZZ_PROFILE=fuzz``): ``XENT_FUZZ_SCALE`` (default 20)
  times as many examples, random, with the example database in ``.hypothesis/`` so a failure
  found once is replayed first next time.

``XENT_FUZZ_TABLE=<path>`` writes the table of cases (kind of input -> tried -> refused
correctly -> slipped through) to that path at the end of the session and prints it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.fuzz import tally

PROFILE_ENV = "XENT_FUZZ_PROFILE"
SCALE_ENV = "XENT_FUZZ_SCALE"
_SLOW_IS_FINE = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.function_scoped_fixture,
    HealthCheck.filter_too_much,
]
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_IS_FINE,
)
settings.register_profile(
    "fuzz",
    derandomize=False,
    database=DirectoryBasedExampleDatabase(".hypothesis/fuzz"),
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_IS_FINE,
)
PROFILE = os.environ.get(PROFILE_ENV, "ci")
settings.load_profile(PROFILE)


def examples(n: int, shrink: bool = True) -> settings:
    """Settings for a property that runs ``n`` examples under the ``ci`` profile (and
    ``XENT_FUZZ_SCALE`` times as many under ``fuzz``).

    Args:
        n: examples under the ``ci`` profile.
        shrink: False reports a failing case as found, without shrinking it (each try of a
            command-line case costs a process).
    """
    scale = int(os.environ.get(SCALE_ENV, "20")) if PROFILE == "fuzz" else 1
    if shrink:
        return settings(max_examples=n * scale)
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    return settings(max_examples=n * scale, phases=phases)


def _table_path(config: pytest.Config) -> Path | None:
    value = os.environ.get(tally.TABLE_ENV)
    return Path(value).resolve() if value else None


def _counts_dir(path: Path) -> Path:
    return path.with_name(path.name + ".counts")


def pytest_sessionstart(session: pytest.Session) -> None:
    path = _table_path(session.config)
    if path is not None and not hasattr(session.config, "workerinput"):
        shutil.rmtree(_counts_dir(path), ignore_errors=True)  # a fresh count per session


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = _table_path(session.config)
    if path is not None:
        tally.dump(_counts_dir(path))  # every process, pytest-xdist workers too


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    path = _table_path(terminalreporter.config)
    if path is None:
        return
    text = tally.table(tally.merge(_counts_dir(path)))
    found = tally.found(_counts_dir(path))
    if found:
        text += "\n\nCases the contract does not allow (first few of each kind):\n"
        text += "\n".join(found)
    path.write_text(text + "\n")
    terminalreporter.write_sep("=", f"fuzz campaign ({PROFILE} profile): {path}")
    terminalreporter.write_line(text)
