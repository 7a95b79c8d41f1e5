import sys

from emvos.cli import main

sys.exit(main())
