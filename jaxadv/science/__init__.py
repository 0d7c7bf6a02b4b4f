"""The ground truth: exact policy gradients on finite MDPs (:mod:`jaxadv.science.exact`),
estimator bias and variance against them (:mod:`jaxadv.science.variance`), and exact
gradients of language-model objectives on enumerable token tasks
(:mod:`jaxadv.science.sequence_exact`, :mod:`jaxadv.science.objective_exact`)."""
