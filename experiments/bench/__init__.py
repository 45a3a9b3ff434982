"""The naive reference the benchmark measures against."""
