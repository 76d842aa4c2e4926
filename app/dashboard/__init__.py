"""The oversight dashboard: one server-rendered page whose data all comes from the guarded API."""
