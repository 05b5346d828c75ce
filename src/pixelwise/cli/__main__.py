"""``python -m pixelwise.cli`` (how ``--nproc`` starts its workers under torchrun)."""

import sys

from pixelwise.cli import main

if __name__ == "__main__":
    sys.exit(main())
