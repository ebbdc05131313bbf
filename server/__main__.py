"""``python -m server`` is the ``xferd`` command."""
import sys

from .cli import main

sys.exit(main())
