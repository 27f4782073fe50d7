"""Benchmarks: one module per benchmark, each with ``main(out_dir)``; ``python -m benchmarks.run``
(``make bench``) runs them all and writes ``benchmarks/results/<name>.json``."""
