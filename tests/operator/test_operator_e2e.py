"""End to end: Kopf in-process against kmock, real dynamo-node processes as pods."""

from __future__ import annotations

import pytest

from tests.operator.conftest import Env, minimal_example

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


async def test_minimal_example_becomes_available(env: Env) -> None:
    await env.create(minimal_example())
    status = await env.wait_stable("demo", 3, timeout=60)
    print(status)
