"""Benchmarks that print numbers (`make bench`); timings are measured, not asserted."""
