"""Schemathesis hooks of the REST fuzz run (tests/e2e/test_rest_fuzz.py loads them into the
`st` process through SCHEMATHESIS_HOOKS).

Random identifiers almost never name a real order or webhook, so the fuzzer would only see
404s there. The test passes real ones in FUZZ_TARGETS_ENV (JSON): the fuzz user's own order
and webhook, and another user's. Path parameters are drawn from those besides the generated
values, and a check holds that another user's resources are never served nor broken: any
answer but a success or a 5xx (403 and 404, or a 4xx about the request itself).
"""

from __future__ import annotations

import json
import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

FUZZ_TARGETS_ENV = "ORDERMESH_FUZZ_TARGETS"

# {"own": {"order_id": ..., "webhook_id": ...}, "foreign": {...}}
_TARGETS: dict[str, dict[str, str]] = json.loads(os.environ.get(FUZZ_TARGETS_ENV, "{}"))
_FOREIGN_IDS = set(_TARGETS.get("foreign", {}).values())


@schemathesis.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any]
) -> st.SearchStrategy[dict[str, Any]]:
    if not path_parameters:
        return st.just(path_parameters)
    known = [
        {**path_parameters, name: ids[name]}
        for ids in _TARGETS.values()
        for name in path_parameters
        if name in ids
    ]
    if not known:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters), st.sampled_from(known))


@schemathesis.check
def foreign_resources_stay_private(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    named = set((case.path_parameters or {}).values()) & _FOREIGN_IDS
    if not named:
        return None
    status = response.status_code
    if status < 300 or status >= 500:
        raise AssertionError(
            f"{case.method} {case.formatted_path} on another user's resource answered {status};"
            " expected 403 or 404 (or a 4xx about the request)"
        )
    return True
