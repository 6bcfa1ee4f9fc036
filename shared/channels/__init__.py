"""One adapter module per messaging channel."""
