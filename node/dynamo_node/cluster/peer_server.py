"""The replica side of the node-to-node protocol, and the registry of peer methods.

The RPC server (`net.rpc_server`) hands every authenticated call here. The replica
calls are served directly: `get` (a stored object, encoded), `put` (a new version made
on this replica: this node is the coordinator's chosen replica), `merge` (a version to
merge, perhaps as a hint for another node) and `merge_many` (a batch of a partition
transfer or of a refill: the receiving end of `transfer`). Reads and, unless every write
waits for an fsync, writes are answered synchronously on the server's fast path
(`serve_now`); otherwise the answer waits for the commit log's barrier. Every other
method is looked up in the registry the parts fill with `register` (gossip, anti-entropy
exchanges, transfers, claimant calls).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from dynamo_node.cluster.local_replica import LocalReplica
from dynamo_node.cluster.view import ClusterView
from dynamo_node.core.codec import CodecError, clock_from_wire, decode_object, encode_object
from dynamo_node.core.errors import InvalidRequest, Unavailable

Handler = Callable[[Any, str], Awaitable[Any]]


class PeerServer:
    def __init__(
        self,
        view: ClusterView,
        local: LocalReplica,
        sync_writes: bool,
        on_bulk: Callable[[int], None] = lambda count: None,
    ) -> None:
        self.view = view
        self.local = local
        #: every write waits for its fsync (durability "sync"): no write on the fast path
        self.sync_writes = sync_writes
        #: told how many keys each merge_many brought (transfer statistics)
        self.on_bulk = on_bulk
        self.methods: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler) -> None:
        if name in self.methods or name in ("get", "put", "merge", "merge_many", "ping"):
            raise ValueError(f"peer method {name!r} registered twice")
        self.methods[name] = handler

    def serve_now(self, method: str, args: Any, caller: str) -> tuple[bool, Any]:
        """Serve a replica call synchronously when it needs no await (reads always;
        writes unless every write waits for an fsync): no task per call."""
        if method == "get":
            self.view.report_alive(caller)
            return True, self._get(args)
        if self.sync_writes or method not in ("put", "merge", "merge_many"):
            return False, None
        self.view.report_alive(caller)
        if method == "put":
            return True, self._put(args)
        if method == "merge":
            return True, self._merge(args)
        return True, self._merge_many(args)

    async def handle(self, method: str, args: Any, caller: str) -> Any:
        if caller != self.view.node_id:
            self.view.report_alive(caller)
        if method == "get":
            return self._get(args)
        if method == "put":
            result: Any = self._put(args)
        elif method == "merge":
            result = self._merge(args)
        elif method == "merge_many":
            result = self._merge_many(args)
        elif method == "ping":
            state = self.view.state
            return [self.view.node_id, state.version if state else 0]
        else:
            handler = self.methods.get(method)
            if handler is None:
                raise InvalidRequest(f"unknown internal method {method!r}")
            return await handler(args, caller)
        await self.local.durable()
        return result

    @staticmethod
    def _skey(raw: Any) -> bytes:
        if not isinstance(raw, bytes) or len(raw) < 8:
            raise InvalidRequest("bad storage key")
        return raw

    def _get(self, args: Any) -> bytes | None:
        if self.view.replacing:  # its "not found" would not mean anything yet
            raise Unavailable("this replica is being refilled (a replacement)")
        return self.local.read_encoded(self._skey(args[0]))

    def _put(self, args: Any) -> bytes:
        skey = self._skey(args[0])
        flat, pruned, value, content_type, hint_for = args[1:6]
        context = clock_from_wire(flat, bool(pruned))
        if value is not None and not isinstance(value, bytes):
            raise InvalidRequest("value must be bytes")
        new = self.local.put(skey, context, value, str(content_type), hint_for or None)
        return encode_object(new)

    def _merge(self, args: Any) -> bool:
        skey = self._skey(args[0])
        data = args[1]
        hint_for = args[2] if len(args) > 2 else None
        if not hint_for and isinstance(data, bytes) and self.local.merge_encoded(skey, data):
            return True
        try:
            obj = decode_object(data)
        except CodecError as exc:
            raise InvalidRequest(f"bad object: {exc}") from None
        self.local.merge(skey, obj, hint_for or None)
        return True

    def _merge_many(self, args: Any) -> int:
        self.on_bulk(len(args))
        changed = 0
        for skey, raw in args:
            try:
                obj = decode_object(raw)
            except CodecError:
                continue
            _, did = self.local.replica.apply_merge(self._skey(skey), obj)
            changed += did
        return changed
