"""`python -m serve_app ...`: see serve_app.cli."""

import sys

from serve_app.cli import main

sys.exit(main())
