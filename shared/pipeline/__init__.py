"""The stages between queues: each consumes one envelope type and hands work on."""
