"""The bounded JSON reader: how deep a body nests decides whether a webhook takes it."""

from __future__ import annotations

import json

import pytest

from shared.inputs import MAX_JSON_DEPTH, json_depth, loads_json


@pytest.mark.parametrize(("text", "depth"), [
    ("1", 0), ('"x"', 0), ("[]", 1), ("{}", 1), ("[[]]", 2), ('{"a": [1, {"b": []}]}', 4),
    ('[1, [2, [3]], {"a": 1}]', 3), ('[{"a": {"b": {"c": 1}}}, [[[[]]]]]', 5),
])
def test_depth_counts_the_deepest_array_or_object(text: str, depth: int) -> None:
    assert json_depth(json.loads(text)) == depth


def test_a_body_at_the_limit_is_read_and_one_level_deeper_is_refused() -> None:
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert json_depth(loads_json(at_limit)) == MAX_JSON_DEPTH
    with pytest.raises(ValueError, match="nested deeper"):
        loads_json("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    with pytest.raises(ValueError, match="nested deeper"):
        loads_json('{"a":' * 5000 + "1" + "}" * 5000)
