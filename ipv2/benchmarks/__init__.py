"""Benchmarks behind ``ipv2 bench``: they print figures and assert nothing."""
