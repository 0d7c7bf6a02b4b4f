"""`make demo` until the trainer lands: advantages of a sample rollout, printed as a table."""

import jax.numpy as jnp

import jaxadv


def main() -> None:
    """Print TD, n-step, GAE and Monte Carlo advantages for an 8-step rollout with one cut."""
    rewards = jnp.ones(8)
    values = jnp.linspace(4.0, 1.0, 8)
    next_values = jnp.concatenate([values[1:], jnp.array([0.5])]).at[3].set(2.0)
    terminated = jnp.zeros(8, bool).at[7].set(True)
    truncated = jnp.zeros(8, bool).at[3].set(True)  # a time limit after step 3
    args = (rewards, values, next_values, terminated, truncated)
    rows = {
        "td": jaxadv.td_errors(rewards, values, next_values, terminated, gamma=0.99),
        "nstep(3)": jaxadv.n_step_advantages(*args, gamma=0.99, n=3),
        "gae(0.95)": jaxadv.gae(*args, gamma=0.99, lambda_=0.95),
        "mc": jaxadv.discounted_returns(rewards, next_values, terminated, truncated, gamma=0.99)
        - values,
    }
    print("step      " + "".join(f"{t:>8d}" for t in range(8)))
    print("trunc/term" + "".join(f"{'T' if tr else ('E' if te else '.'):>8}"
                                 for tr, te in zip(truncated, terminated)))
    for name, adv in rows.items():
        print(f"{name:<10}" + "".join(f"{float(a):8.3f}" for a in adv))


if __name__ == "__main__":
    main()
