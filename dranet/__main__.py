import sys

from dranet.cli import main

sys.exit(main())
