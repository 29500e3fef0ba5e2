"""Storage: the RocksDB (and in-memory) key-value layer, group commit and durability, the
local replica's write path and the hint store.
"""
