"""One folder per channel provider: its connection settings, its client, and its request verifier."""
