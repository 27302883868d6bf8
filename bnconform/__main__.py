"""`python -m bnconform`: the same as the `bnconform` console script."""
import sys

from bnconform.runners.cli import main

if __name__ == "__main__":
    sys.exit(main())
