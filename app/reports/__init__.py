"""Oversight and audit: reading the log, reports, reviews of flagged events, signed CSV exports."""
