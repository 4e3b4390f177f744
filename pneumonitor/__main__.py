import sys

from pneumonitor.cli import main

sys.exit(main())
