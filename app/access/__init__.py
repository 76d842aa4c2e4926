"""Decisions and reported access events: evaluate, flag, append."""
