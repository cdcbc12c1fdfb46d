"""Test support: real servers started as child processes, a cuttable TCP proxy, probes.

Never imported by the product (``src/``); the benchmarks use it too."""
