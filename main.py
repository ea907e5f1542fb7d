"""Start Genisys: python main.py [--config genisys.yml] [--dev]"""

import sys

from genisys.cli import main

if __name__ == "__main__":
    sys.exit(main())
