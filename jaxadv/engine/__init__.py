"""The training engine: the tables of algorithms and estimators, rollouts, the compiled
train step (:mod:`jaxadv.engine.train`), checkpoints, the chunked driver and vmapped sweeps.

It stands on the pure functions at the package's top level (advantages, losses,
distributions, corrections), the environments and the networks, and imports no command-line
code: the commands (:mod:`jaxadv.cli`) call it."""
