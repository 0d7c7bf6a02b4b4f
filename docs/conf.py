"""Sphinx configuration of the jaxadv site: `make docs` builds it into docs/_build/html.

The API pages are written at build time from the package's modules, the CLI pages capture
`jaxadv <command> --help`, and the notebooks are rendered from their stored outputs
(never executed here): see docs/_ext/jaxadv_docs.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))
# one host device and no accelerator probing while autodoc imports the package
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jaxadv  # noqa: E402

project = "jaxadv"
author = "the jaxadv authors"
copyright = "the jaxadv authors"
release = jaxadv.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "myst_nb",
    "jaxadv_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# -- API -----------------------------------------------------------------------------------
autosummary_generate = False  # the API pages are written by jaxadv_docs, not autosummary
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
add_module_names = False
python_display_short_literal_types = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# the API index's groups of modules (a module in none is listed under "Other modules")
api_groups = {  # the package's layers, bottom up (jaxadv/__init__.py)
    "Pure functions: estimators, losses, distributions, corrections": [
        "jaxadv.advantages", "jaxadv.losses", "jaxadv.distributions", "jaxadv.corrections",
        "jaxadv.stats", "jaxadv.validate",
    ],
    "Checking your own estimator": ["jaxadv.testing"],
    "Environments": [
        "jaxadv.envs", "jaxadv.envs.registry", "jaxadv.envs.wrappers", "jaxadv.envs.normalize",
        "jaxadv.envs.mdp", "jaxadv.envs.tabular", "jaxadv.envs.sequence", "jaxadv.envs.token",
        "jaxadv.envs.brax_envs",
    ],
    "Networks": ["jaxadv.nets", "jaxadv.nets.networks", "jaxadv.nets.transformer"],
    "The engine": [
        "jaxadv.engine", "jaxadv.engine.algorithms", "jaxadv.engine.estimators",
        "jaxadv.engine.architectures", "jaxadv.engine.train", "jaxadv.engine.rollout",
        "jaxadv.engine.warm_start", "jaxadv.engine.driver", "jaxadv.engine.metrics",
        "jaxadv.engine.checkpoint", "jaxadv.engine.sweep", "jaxadv.engine.evaluate",
        "jaxadv.engine.devices", "jaxadv.engine.policies",
    ],
    "Search": ["jaxadv.tuning", "jaxadv.tuning.halving", "jaxadv.tuning.pbt",
               "jaxadv.tuning.replay", "jaxadv.tuning.selection"],
    "Exact gradients and estimator studies": [
        "jaxadv.science", "jaxadv.science.exact", "jaxadv.science.variance",
        "jaxadv.science.sequence_exact", "jaxadv.science.objective_exact",
    ],
    "The command line": [
        "jaxadv.cli", "jaxadv.cli.app", "jaxadv.cli.train", "jaxadv.cli.sweep",
        "jaxadv.cli.search", "jaxadv.cli.eval", "jaxadv.cli.sequence", "jaxadv.cli.variance",
        "jaxadv.cli.check", "jaxadv.cli.runs", "jaxadv.cli.sweep_args", "jaxadv.cli.options",
        "jaxadv.cli.interrupts",
        "jaxadv.cli.report", "jaxadv.cli.outdir", "jaxadv.cli.tracking",
    ],
}

# -- Markdown and notebooks ----------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # README's and design.md's `#section` links
nb_execution_mode = "off"  # the notebooks are rendered from their stored outputs
nb_merge_streams = True

# -- HTML ----------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = f"jaxadv {release}"
html_static_path: list[str] = []
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "home_page_in_toc": True,
    # the left sidebar lists the pages, not each page's sections and objects (the right
    # sidebar does): drawing those into every page's navigation was half the build; only the
    # current page's branch is expanded (31 -> 27 s of build on the 2-core machine)
    "max_navbar_depth": 2,
    "collapse_navbar": True,
}
html_show_sourcelink = False
