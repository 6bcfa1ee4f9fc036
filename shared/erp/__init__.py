"""One adapter module per ERP."""
