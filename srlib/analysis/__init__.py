"""Numbers about attention: FLOPs, estimator variance, sparsity, overlap, hashing statistics, time and memory.

Everything here measures or counts; nothing draws (no matplotlib: the pictures are in :mod:`srlib.viz`).
It sits above the mechanisms (:mod:`srlib.attention`) and networks (:mod:`srlib.models`), which import
nothing from it.

==============================  =============================================================================
``srlib.analysis.flops``        analytic FLOP counts of the six mechanisms (NLSN Table 5, ENLCN Table 4)
``srlib.analysis.measure``      measured time (``torch.utils.benchmark``) and peak tensor memory against size,
                                log-log slopes: the one cost-measurement implementation (notebooks 00b, 06)
``srlib.analysis.bench``        the benchmark harness library behind ``benchmarks/harness.py`` (cases,
                                isolated child processes, result tables and CSV)
``srlib.analysis.maps``         one query's attention map, non-local mass, feature maps for demonstrations,
                                softmax flattening (HSPAN Fig. 1; notebook 00b)
``srlib.analysis.enla``         ENLCN's random-feature estimator: variance, amplification, ENLA vs exact rows (02)
``srlib.analysis.buckets``      bucket maps, which keys a query reaches, bucket balance, LSH collisions (01, 03)
``srlib.analysis.hashing``      super-bit vs spherical hashing, bucket-neighbour recall, DLSN Fig. 1/4 numbers (03)
``srlib.analysis.sparsity``     soft-thresholding support, keys carrying a mass, ST vs softmax (04)
``srlib.analysis.overlap``      LCoAN's overlap rate between shallow and deep attention (05)
==============================  =============================================================================

Submodules are imported on demand (``from srlib.analysis.sparsity import mass_coverage``); this package
imports none of them, so importing one does not import the others.
"""
