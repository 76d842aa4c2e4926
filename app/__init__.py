"""access-audit: record-access decisions and a tamper-evident audit log for the mission."""
