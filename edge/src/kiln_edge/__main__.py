import sys

from kiln_edge.cli import main

sys.exit(main())
