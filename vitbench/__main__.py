import sys

from vitbench.cli import main

sys.exit(main())
