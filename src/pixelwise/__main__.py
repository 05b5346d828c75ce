"""``python -m pixelwise ...``: the ``pixelwise`` command."""

import sys

from pixelwise.cli import main

if __name__ == "__main__":
    sys.exit(main())
