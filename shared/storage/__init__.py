"""Storage behind small interfaces: tables (dedup, jobs, audit, watermarks), queues, secrets."""
