"""One folder per ERP kind: its connection settings, its client, and its adapter."""
