"""``python -m jaxadv ...``: the same as the ``jaxadv`` command."""

import sys

from jaxadv.cli import main

if __name__ == "__main__":
    sys.exit(main())
