"""The partition machinery itself (tests/fault/netns.py): nodes on 127.77.0.x in their
own namespaces, the hub reaching all of them, and each fault cutting exactly the links
it should, silently (a partition that does nothing would make every partition test
pass for nothing). Plain TCP listeners stand in for nodes, so this takes a few seconds.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.fault.netns import Netns

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(60)]

PORT = 7399
LISTEN = (
    "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
    "s.bind(({host!r},{port}));s.listen(64);print('up',flush=True)\n"
    "while True: s.accept()[0].close()"
)
PROBE = (
    "import json,socket,sys\n"
    "def ok(h):\n"
    "    try:\n"
    "        socket.create_connection((h,{port}),timeout=0.4).close(); return True\n"
    "    except OSError: return False\n"
    "print(json.dumps([ok(h) for h in sys.argv[1:]]))"
)


@pytest.fixture
def net(require_netns: None) -> Iterator[Netns]:
    net = Netns(3).create()
    procs: list[subprocess.Popen[str]] = []
    try:
        for i in range(3):
            code = LISTEN.format(host=net.host(i), port=PORT)
            proc = subprocess.Popen(
                [*net.exec_prefix(i), sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
            )
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        yield net
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(5)
        net.destroy()


def matrix(net: Netns) -> dict[str, set[int]]:
    """Who reaches whom: node i (and the hub) -> the set of nodes it can connect to."""
    hosts = [net.host(i) for i in range(net.count)]
    out: dict[str, set[int]] = {}
    for i in range(net.count):
        argv = [*net.exec_prefix(i), sys.executable, "-c", PROBE.format(port=PORT), *hosts]
        answer = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
        out[f"n{i}"] = {j for j, ok in enumerate(answer) if ok and j != i}
    hub: set[int] = set()
    with net.entered():
        for j, host in enumerate(hosts):
            try:
                socket.create_connection((host, PORT), timeout=0.4).close()
                hub.add(j)
            except OSError:
                pass
    out["hub"] = hub
    return out


ALL = {"n0": {1, 2}, "n1": {0, 2}, "n2": {0, 1}, "hub": {0, 1, 2}}


def test_every_node_reaches_every_other_and_the_hub_reaches_all(net: Netns) -> None:
    assert matrix(net) == ALL


def test_a_split_cuts_the_sides_apart_but_clients_reach_both(net: Netns) -> None:
    net.partition([[0, 1], [2]])
    assert matrix(net) == {"n0": {1}, "n1": {0}, "n2": set(), "hub": {0, 1, 2}}
    net.heal()
    assert matrix(net) == ALL


def test_a_bridge_node_hears_both_halves(net: Netns) -> None:
    net.sever([(0, 2)])
    assert matrix(net) == {"n0": {1}, "n1": {0, 2}, "n2": {1}, "hub": {0, 1, 2}}
    net.heal()
    assert matrix(net) == ALL


def test_a_cut_link_isolates_a_node_from_everyone(net: Netns) -> None:
    net.cut(1)
    assert matrix(net) == {"n0": {2}, "n1": set(), "n2": {0}, "hub": {0, 2}}
    net.heal()
    assert matrix(net) == ALL


def test_a_partition_drops_packets_silently(net: Netns) -> None:
    """Like a real partition: a connection attempt times out, it is not refused."""
    net.partition([[0], [1, 2]])
    probe = (
        "import socket\ntry:\n"
        f"    socket.create_connection(({net.host(1)!r},{PORT}),timeout=0.5)\n"
        "except TimeoutError: print('timeout')\n"
        "except OSError as e: print(type(e).__name__)"
    )
    argv = [*net.exec_prefix(0), sys.executable, "-c", probe]
    assert (
        subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip() == "timeout"
    )
