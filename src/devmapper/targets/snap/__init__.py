"""Shared pieces of the snapshot targets (dm-snap.c and its exception stores).

- ``store``: the exception-store interface and dm_exception_store_create (type, chunk size).
- ``persistent``: the kernel's on-disk COW format (dm-snap-persistent.c), byte for byte.
- ``transient``: the in-memory store (dm-snap-transient.c).
- ``registry``: origins -> snapshots, keyed by the origin's underlying device, per engine.
- ``core``: struct dm_snapshot: constructor, exception tables, pending exceptions and the
  in-order commit pipeline, handover, status; the snapshot and snapshot-merge targets
  subclass it.
"""
