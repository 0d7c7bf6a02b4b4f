"""``python -m jaxadv.cli ...``: the same as the ``jaxadv`` command."""

import sys

from jaxadv.cli import main

if __name__ == "__main__":
    sys.exit(main())
