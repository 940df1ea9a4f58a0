"""Tiny random models for tests and the benchmarks' CPU modes; not product code. Importing this package imports nothing heavy."""

