"""``python -m fcn_edge.cli`` is ``fcn-edge``."""
import sys

from . import main

sys.exit(main())
