"""Benchmarks: real runs that print their figures (`make bench`)."""
