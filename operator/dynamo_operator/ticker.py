"""One periodic task per watched object, started and stopped by watch events.

This replaces a Kopf timer. Kopf puts its finalizer on every object that has a timer or
a daemon, so that it can stop the task before the object goes. With that finalizer,
deleting a `DynamoCluster` (or its namespace) while the operator is not running hangs in
Terminating. The operator has no deletion work: owned objects go by their owner
references, volumes by the StatefulSet's retention policy. So it needs no finalizer.

The watch stream decides when a task runs. The first event for an object starts its
task. Every later event replaces the body the task reads next (the same cached body a
Kopf timer gets). A DELETED event, or a body with a deletionTimestamp, stops the task.
The operator's cleanup stops them all.

A tick that raises is logged and never stops the loop, as a Kopf timer in
`ErrorsMode.TEMPORARY` behaves. `delay_of(exc)` says how long to wait before the next
tick for a failure the caller expects (e.g. `kopf.TemporaryError`'s delay), logged in
one line; None means unexpected: logged with its traceback, next tick after the
interval.

Pure asyncio (no Kopf), so it is tested on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("dynamo.operator")

Body = Mapping[str, Any]
Tick = Callable[[Body], Awaitable[None]]


def _no_delay(_: BaseException) -> float | None:
    return None


@dataclass
class _Watched:
    body: Body
    task: asyncio.Task[None] | None = None


@dataclass
class Ticker:
    """Runs `tick(latest body)` every `interval_s` for each object it has seen."""

    tick: Tick
    interval_s: float
    delay_of: Callable[[BaseException], float | None] = _no_delay
    _watched: dict[str, _Watched] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {self.interval_s}")

    @property
    def watching(self) -> frozenset[str]:
        """The uids with a running task."""
        return frozenset(uid for uid, w in self._watched.items() if w.task is not None)

    def seen(self, event_type: str | None, body: Body) -> None:
        """Feed one watch event (type None: listed at start-up)."""
        metadata = body.get("metadata") or {}
        uid = metadata.get("uid")
        if not isinstance(uid, str) or not uid:
            return
        if event_type == "DELETED" or metadata.get("deletionTimestamp"):
            self._forget(uid)
            return
        watched = self._watched.get(uid)
        if watched is None:
            watched = self._watched[uid] = _Watched(body)
            watched.task = asyncio.create_task(self._loop(uid), name=f"observe {uid}")
        else:
            watched.body = body

    def _forget(self, uid: str) -> None:
        watched = self._watched.pop(uid, None)
        if watched is not None and watched.task is not None:
            watched.task.cancel()

    async def _loop(self, uid: str) -> None:
        while (watched := self._watched.get(uid)) is not None:
            delay: float | None = self.interval_s
            try:
                await self.tick(watched.body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a tick's failure never ends the loop
                delay = self.delay_of(exc)
                meta = watched.body.get("metadata") or {}
                log.warning(
                    "%s/%s: observation failed: %s",
                    meta.get("namespace"),
                    meta.get("name"),
                    exc,
                    exc_info=delay is None,
                )
            await asyncio.sleep(delay if delay is not None else self.interval_s)

    async def close(self) -> None:
        """Stop every task and wait for them."""
        tasks = [w.task for w in self._watched.values() if w.task is not None]
        self._watched.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
