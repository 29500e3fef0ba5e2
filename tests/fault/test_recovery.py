"""How soon a healed partition really is healed: after the links come back, a write
that needs every replica (w=3) must succeed again within RECOVERY_S.

Regression test: the node-to-node `TcpTransport` used to keep a peer connection whose
calls timed out; its unacked data sat in TCP retransmission backoff (rto 6.5 s after an
8 s partition, 26 s after a 30 s one), so w=3 writes failed for 5-25 s after healing.
The transport now drops a connection that stayed silent through a call's timeout and
sets TCP_USER_TIMEOUT; measured after the fix: writes succeed again 0.4 s after a 20 s
partition heals.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dynamo_node.client import ClientError, DynamoClient
from tests.fault.cluster import fault_cluster
from tests.fault.scenarios import NODE_FLAGS, form

pytestmark = [pytest.mark.cluster]

PARTITION_S = 20.0
RECOVERY_S = 3.0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_replicas_are_reachable_again_soon_after_a_partition_heals(
    tmp_path: Path, require_netns: None, fault_long: bool
) -> None:
    if not fault_long:
        pytest.skip("long fault scenarios run with --fault-long or DYNAMO_FAULT_LONG=1")
    with fault_cluster(tmp_path, 3, netns=True) as c:
        form(c, 3, *NODE_FLAGS)
        assert c.net is not None
        with c.hub(), DynamoClient(c.nodes[0].address, timeout=10) as client:
            client.put("before", b"x", w=3)
            c.net.partition([[0, 1], [2]])
            end = time.monotonic() + PARTITION_S
            i = 0
            while time.monotonic() < end:  # the coordinator keeps sending to n2
                client.put(f"during/{i}", b"y")
                i += 1
            c.net.heal()
            healed = time.monotonic()
            recovered: float | None = None
            while recovered is None and time.monotonic() - healed < 60:
                try:
                    client.put("after", b"z", w=3, timeout_ms=1000)
                    recovered = time.monotonic() - healed
                except ClientError:
                    continue
        print(f"w=3 writes succeed again {recovered}s after healing")
        assert recovered is not None and recovered < RECOVERY_S, recovered
