"""``python -m fcn_edge`` is ``fcn-edge``."""
import sys

from .cli import main

sys.exit(main())
