"""QAD Adaptive ERP: browses polled through the Web UI API; notes written through QXtend Inbound."""
