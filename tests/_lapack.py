"""What the no-LAPACK tests look for (docs/design.md, "Batched LAPACK under vmap"), shared
by test files."""

import jax.extend as jex

# Primitives that lower to LAPACK custom calls on CPU (docs/design.md, "Batched LAPACK under
# vmap").
LAPACK_PRIMITIVES = {
    "qr", "householder_product", "geqrf", "geqp3", "orgqr", "lu", "lu_pivots_to_permutation",
    "triangular_solve", "cholesky", "eig", "eigh", "svd", "schur", "hessenberg", "tridiagonal",
    "tridiagonal_solve",
}


def primitive_names(jaxpr) -> set[str]:
    """Every primitive in ``jaxpr`` and in the jaxprs nested in its equations (scan, jit, cond...)."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jex.core.jaxprs_in_params(eqn.params):
            names |= primitive_names(sub)
    return names
