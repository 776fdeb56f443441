"""Supervision: the restart table, one runner per service, the supervisor, probes, events, output."""
