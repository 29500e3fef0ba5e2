"""Automatic replacement of a member whose Kubernetes node is gone for good (pure).

A node that comes back with an empty volume while the ring lists it is a replacement:
it counts towards no quorum and refills its partitions from the other replicas before
it serves (the node does this by itself; `status.members` shows it `replacing`). So a
member whose Kubernetes node (and local volume) is gone is replaced by deleting its
PVC and its pod: the StatefulSet re-creates the pod with a fresh claim elsewhere.

`choose_replacement` decides when the operator does that by itself: only with
`spec.autoReplace.enabled`, and at most one pod, which must

- be a ring member that does not answer, and the only pod of the cluster that is not
  ready (every other pod is ready, answers and is up: one at a time, never below
  quorum); and
- either be bound to a Kubernetes node that is gone (no Node object of that name, or
  its Ready condition not True for longer than `after`) while the pod itself has not
  been ready for longer than `after`;
- or be `Pending` and unschedulable for longer than `after` with its volume tied to
  hosts of which none exists any more (a local volume whose machine was removed: the
  pod garbage collector deleted the pod on the vanished node and the StatefulSet
  re-created it, but it can never be scheduled next to that volume).

Never while the cluster is paused, scaling (an operation in progress, or the
StatefulSet not at the requested size), upgrading, while a member is leaving or already
replacing, while the ring has fewer than `replication.n` members, or when the Kubernetes
Nodes were not observed. A time that is missing or unreadable never counts as "long
enough".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import NamedTuple

from .builders import DATA_VOLUME
from .observed import HostView, Observed, PodView
from .ringview import RingView
from .spec import ClusterSpec
from .steps import ReplaceMember


def claim_name(pod: str) -> str:
    """The PVC of a pod: the StatefulSet names it `<template>-<pod>`."""
    return f"{DATA_VOLUME}-{pod}"


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time as the API server writes them (`2024-05-01T12:00:00Z`)."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _longer_than(since: str | None, now: datetime, after: timedelta) -> bool:
    start = parse_time(since)
    return start is not None and now - start > after


def find_host(hosts: Mapping[str, HostView], name: str) -> HostView | None:
    """The Node called `name`, or whose `kubernetes.io/hostname` label is `name`."""
    found = hosts.get(name)
    if found is not None:
        return found
    return next((h for h in hosts.values() if h.hostname == name), None)


class _Gone(NamedTuple):
    host: str
    why: str


def _host_gone(
    pod: PodView, hosts: Mapping[str, HostView], now: datetime, after: timedelta
) -> _Gone | None:
    """A pod bound to a Kubernetes node that is gone, not ready for longer than `after`."""
    if pod.node_name is None or not _longer_than(pod.unready_since, now, after):
        return None
    host = find_host(hosts, pod.node_name)
    if host is None:
        return _Gone(pod.node_name, f"its Kubernetes node {pod.node_name} no longer exists")
    if not host.ready and _longer_than(host.ready_since, now, after):
        return _Gone(
            pod.node_name,
            f"its Kubernetes node {pod.node_name} has not been Ready since {host.ready_since}",
        )
    return None


def choose_replacement(
    spec: ClusterSpec, observed: Observed, ring: RingView, now: datetime
) -> ReplaceMember | None:
    """The one pod to replace now, or None (see the module docstring for the rules)."""
    rules = spec.auto_replace
    if not rules.enabled or observed.hosts is None:
        return None
    after = timedelta(seconds=rules.after_s)
    n, requested, sts = observed.n, observed.requested, observed.statefulset
    # paused, refused, scaling or upgrading: leave the pods to the scaling machine
    if requested == 0 or requested != spec.replicas or requested < n:
        return None
    if observed.operation is not None or sts is None or sts.replicas != requested:
        return None
    # the ring must be whole apart from one missing member, and not already refilling
    if ring.coordinator is None or ring.replacing or ring.leaving or len(ring.members) < n:
        return None
    expected = [observed.pod_name(i) for i in range(sts.replicas)]
    unready = [
        name
        for name in expected
        if (pod := observed.pod(name)) is None or not pod.ready or name not in observed.nodes
    ]
    if len(unready) != 1:
        return None  # all well, or more than one pod down: never two at a time
    (name,) = unready
    pod = observed.pod(name)
    if pod is None or pod.ready or name in observed.nodes or name not in ring.members:
        return None
    if any(other in ring.down for other in ring.members - {name}):
        return None
    hosts = observed.hosts
    gone = _host_gone(pod, hosts, now, after)
    if gone is None:
        gone = _volume_gone(pod, observed, hosts, now, after)
    if gone is None:
        return None
    return ReplaceMember(
        pod=name,
        uid=pod.uid,
        claim=claim_name(name),
        host=gone.host,
        why=gone.why,
        message=(
            f"replacing {name}: {gone.why} and the pod has not been ready for over "
            f"{rules.after}; deleting PVC {claim_name(name)} and the pod, so it comes back "
            "with an empty volume and refills from its peers"
        ),
    )


def _volume_gone(
    pod: PodView,
    observed: Observed,
    hosts: Mapping[str, HostView],
    now: datetime,
    after: timedelta,
) -> _Gone | None:
    """A pod that cannot be scheduled because its volume is on a host that is gone."""
    if pod.node_name is not None or pod.phase != "Pending":
        return None
    if not _longer_than(pod.unschedulable_since, now, after):
        return None
    tied = observed.volume_hosts.get(pod.name, frozenset())
    if not tied or any(find_host(hosts, host) is not None for host in tied):
        return None
    host = sorted(tied)[0]
    return _Gone(host, f"its volume is tied to Kubernetes node {host}, which no longer exists")
