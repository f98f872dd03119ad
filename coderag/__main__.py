"""``python -m coderag``: the same as the ``coderag`` command."""

import sys

from coderag.cli import main

sys.exit(main())
