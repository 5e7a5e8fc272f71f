"""Benchmarks that run tf-admm and tfmot on the same work in one process.

* :mod:`bench.overhead`: time per training step of plain Keras, tf-admm (ADMM and retraining
  phases) and tfmot ``prune_low_magnitude``, and the memory the wrappers add.
* :mod:`bench.frontier`: accuracy against compression ratio of LeNet-5, tf-admm against tfmot,
  over seeds, ratios and arms (library:allocation); each point is one :mod:`bench.sweep` run
  (one dense model per seed, the same epochs for every arm), cached; :mod:`bench.comparisons`
  computes the same-allocation and best-practice comparisons from the point records.
* :mod:`bench.combined`: pruning + quantization of LeNet-5, tf-admm's combined config against
  tfmot's prune -> cluster (preserve_sparsity) -> PCQAT, on the same checkpoint and budget:
  accuracy, paper-style storage, ``.tflite`` bytes and gzip bytes.
* :mod:`bench.results`: ``docs/RESULTS.md`` and its plots from the benchmarks' JSON outputs.

Run them as ``python -m bench.<module> [--smoke]``; see ``bench/README.md``.
"""
