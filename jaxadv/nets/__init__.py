"""Networks: the MLP, CNN and GRU actor-critics (:mod:`jaxadv.nets.networks`) and the
causal transformer policy (:mod:`jaxadv.nets.transformer`). Flax modules and their
initialisers; they know nothing of environments or training."""
