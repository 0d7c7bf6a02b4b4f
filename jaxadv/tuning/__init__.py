"""Hyperparameter search on top of vmapped sweeps: successive halving
(:mod:`jaxadv.tuning.halving`), population-based training inside one compiled program
(:mod:`jaxadv.tuning.pbt`), a PBT member's schedule replayed from scratch
(:mod:`jaxadv.tuning.replay`) and honest selection on fresh seeds
(:mod:`jaxadv.tuning.selection`)."""
