"""The book's benchmark: ``python -m benchmarks`` (from the repository root) times each kernel
against its floor and its naive reference, in one run, and prints the ratios."""
