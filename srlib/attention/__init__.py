"""Attention mechanisms for SR and the bucket machinery they share.

:mod:`srlib.attention.registry` lists the mechanisms (class, knobs, demo module, FLOP and benchmark
references) for the explorer, the FLOP table and the benchmark; :func:`~srlib.attention.registry.register`
adds one.
"""
