import sys

from xlcf.cli import main

sys.exit(main())
