"""Faithful local fakes of the external services (real HTTP on loopback)."""
