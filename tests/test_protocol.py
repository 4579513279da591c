"""The verdict protocol: rule parameters stated once in the registry, a version with a dated
change log, and a hash that changes with any rule parameter."""

from __future__ import annotations

import dataclasses
import re

import pytest

from xent_tf.claims import protocol, registry
from xent_tf.claims.protocol import RuleParam, rules_hash


def test_the_change_log_ends_at_the_current_version_with_dated_reasons() -> None:
    versions = [change.version for change in protocol.PROTOCOL_CHANGES]
    assert versions[-1] == protocol.PROTOCOL_VERSION
    assert [int(v) for v in versions] == list(range(1, len(versions) + 1))
    for change in protocol.PROTOCOL_CHANGES:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", change.date), change
        assert change.why and all(len(line) > 40 for line in change.why), change
    # the lead's change (a part not measured caps the claim) is recorded as a protocol change
    assert any("not measured" in line for line in protocol.PROTOCOL_CHANGES[1].why)


def test_the_hash_changes_with_any_rule_parameter_and_only_then() -> None:
    rules = {claim.id: claim.rules for claim in registry.CLAIMS.values()}
    assert rules_hash(rules) == rules_hash(dict(reversed(list(rules.items()))))
    assert rules_hash(rules) == registry.protocol_hash()
    margin = next(p for p in rules["C8"] if p.name == "equivalence_margin")
    moved = tuple(dataclasses.replace(p, value=0.02) if p is margin else p for p in rules["C8"])
    assert rules_hash({**rules, "C8": moved}) != rules_hash(rules)
    # the wording of a parameter's meaning is not a rule
    reworded = tuple(
        dataclasses.replace(p, meaning="reworded") if p is margin else p for p in rules["C8"]
    )
    assert rules_hash({**rules, "C8": reworded}) == rules_hash(rules)
    assert re.fullmatch(r"[0-9a-f]{12}", rules_hash(rules))


def test_rule_parameters_are_read_by_name_and_bad_names_are_refused() -> None:
    assert registry.rule_float("C8", "equivalence_margin") == 0.01
    assert registry.rule_floats("C4", "non_dyadic_q") == (0.1, 0.2, 0.3, 0.4)
    with pytest.raises(ValueError, match=r"C8 states no rule parameter 'margin'; it states \["):
        registry.rule_value("C8", "margin")
    with pytest.raises(ValueError, match=r"is \(0\.1, .*\), not one number"):
        registry.rule_float("C4", "non_dyadic_q")
    with pytest.raises(ValueError, match=r"is 0\.01, not a grid"):
        registry.rule_floats("C8", "equivalence_margin")
    with pytest.raises(ValueError, match="stated twice"):
        protocol.param_map([RuleParam("a", 1.0, "x"), RuleParam("a", 2.0, "y")])
    with pytest.raises(ValueError, match=r"statistic 'beta' is not one of \['alpha'"):
        protocol.statistic("beta")
    assert protocol.statistic("alpha") == 0.05 and protocol.statistic("min_seeds") == 3


def test_claims_md_states_every_rule_parameter_and_the_protocol() -> None:
    text = registry.render_claims_markdown()
    for claim in registry.CLAIMS.values():
        for param in claim.rules:
            assert param.describe() in text, (claim.id, param.name)
    for param in protocol.STATISTICS:
        assert f"- {param.describe()}" in text
    assert f"Protocol version {protocol.PROTOCOL_VERSION}" in text
    assert f"({registry.protocol_hash()})" in text
