"""Alarm rules: one home for what makes a rule valid, every refusal naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from fieldhub.hub.alarms.index import RuleIndex
from fieldhub.hub.alarms.rules import EventCondition, ThresholdCondition, parse_rule
from fieldhub.hub.errors import Invalid

HOT: dict[str, Any] = {
    "id": "over-temp",
    "name": "Cabinet too hot",
    "severity": "major",
    "target": {"labels": {"site": "berlin"}},
    "condition": {
        "kind": "threshold",
        "key": "temperature",
        "direction": "above",
        "raise": 50,
        "clear": 45,
    },
    "for_s": 30,
}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def test_a_rule_reads_back_as_it_was_written():
    rule = parse_rule(HOT)
    assert isinstance(rule.condition, ThresholdCondition)
    assert rule.target.covers("x", {"site": "berlin", "group": "atm"})
    assert not rule.target.covers("x", {"site": "paris"})
    assert parse_rule(rule.to_dict()) == rule


def test_hysteresis_holds_inside_the_band():
    condition = parse_rule(HOT).condition
    assert isinstance(condition, ThresholdCondition)
    states = []
    active = False
    for value in (40, 50, 47, 49.9, 46, 45, 44, 49, 50):
        active = condition.next_state(active, value)
        states.append(active)
    assert states == [False, True, True, True, True, False, False, False, True]
    below = parse_rule(
        with_(
            HOT,
            condition={
                "kind": "threshold",
                "key": "v",
                "direction": "below",
                "raise": 11,
                "clear": 12,
            },
        )
    ).condition
    assert isinstance(below, ThresholdCondition)
    assert below.next_state(False, 11)
    assert below.next_state(True, 11.5)
    assert not below.next_state(True, 12)


@pytest.mark.parametrize(
    ("changes", "loc", "words"),
    [
        ({"condition": {**HOT["condition"], "clear": 55}}, ("condition", "clear"), "below raise"),
        ({"condition": {**HOT["condition"], "clear": 50}}, ("condition", "clear"), "hysteresis"),
        (
            {
                "condition": {
                    "kind": "threshold",
                    "key": "v",
                    "direction": "below",
                    "raise": 11,
                    "clear": 10,
                }
            },
            ("condition", "clear"),
            "above raise",
        ),
        ({"condition": {**HOT["condition"], "raise": "hot"}}, ("condition", "raise"), "'hot'"),
        ({"condition": {**HOT["condition"], "key": "bad key"}}, ("condition", "key"), "bad key"),
        ({"condition": {"kind": "weather"}}, ("condition", "kind"), "'weather'"),
        ({"condition": {"kind": "event", "match": "door.*", "x": 1}}, ("condition", "x"), "x"),
        ({"severity": "apocalyptic"}, ("severity",), "apocalyptic"),
        ({"target": {"sites": ["a"]}}, ("target", "sites"), "sites"),
        ({"target": {"all": True, "devices": ["a"]}}, ("target",), "one of"),
        ({"for_s": -1}, ("for_s",), "-1"),
        ({"for_s": 10**12}, ("for_s",), "1000000000000"),
        ({"id": "Has Spaces"}, ("id",), "Has Spaces"),
        ({"colour": "red"}, ("colour",), "colour"),
        ({"auto_clear_s": 60}, ("auto_clear_s",), "threshold"),
        (
            {"condition": {"kind": "absence", "key": "t", "seconds": 0}},
            ("condition", "seconds"),
            "at least 1",
        ),
        (
            {"condition": {"kind": "presence", "presence": "gone"}},
            ("condition", "presence"),
            "'gone'",
        ),
        ({"condition": {"kind": "state", "key": "lock"}}, ("condition", "equals"), "missing"),
        (
            {"condition": {"kind": "event", "match": "door.*"}, "clearable_by_user": False},
            ("clearable_by_user",),
            "no clear condition",
        ),
    ],
)
def test_bad_rules_are_refused_naming_the_field(changes, loc, words):
    with pytest.raises(Invalid) as refused:
        parse_rule(with_(HOT, **changes))
    assert refused.value.loc == loc
    assert words in str(refused.value)


def test_event_rules_clear_by_users_by_default_and_the_id_of_a_replaced_rule_is_kept():
    rule = parse_rule({"id": "door", "condition": {"kind": "event", "match": "door.*"}})
    assert isinstance(rule.condition, EventCondition)
    assert rule.clearable_by_user
    assert rule.condition.matches("door.opened")
    assert not rule.condition.matches("socket.fault")
    assert parse_rule({"condition": HOT["condition"]}, rule_id="x").id == "x"
    with pytest.raises(Invalid) as refused:
        parse_rule(HOT, rule_id="other")
    assert refused.value.loc == ("id",)


def test_the_index_hands_a_key_only_to_its_rules():
    rules = [
        parse_rule(with_(HOT, id=f"t{i}", condition={**HOT["condition"], "key": f"k{i}"}))
        for i in range(1000)
    ]
    rules.append(parse_rule({"id": "door", "condition": {"kind": "event", "match": "door.*"}}))
    rules.append(parse_rule(with_(HOT, id="off", enabled=False)))
    index = RuleIndex(rules)
    assert [r.id for r in index.threshold["k7"]] == ["t7"]
    assert "temperature" not in index.threshold  # the disabled rule listens to nothing
    assert [r.id for r in index.for_event("door.opened")] == ["door"]
    assert index.for_event("socket.fault") == []
