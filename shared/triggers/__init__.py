"""Thin triggers, one Blueprint per inbound area: authenticate, validate, enqueue, answer."""
