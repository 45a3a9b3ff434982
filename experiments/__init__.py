"""Scripts that make the committed figures and tables and the shipped weights; run each
as ``python -m experiments.<name>`` from the repository root (experiments/README.md)."""
