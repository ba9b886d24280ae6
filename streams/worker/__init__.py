"""The worker runtime: what every stage shares, so a stage holds only its own logic.

- ``state``: a faust table's values decoded once per key, written once per batch, through
  one versioned codec per table.
- ``outbox``: a batch's outputs delivered through one producer and awaited.
- ``batch``: the checkpoint each batch goes through (handle, deliver, write state, commit).
- ``stage``: what a stage declares (its inputs, its state table, its handler).
- ``app``: the faust app built from the registry in ``tickwire.streams.stages``.
"""
