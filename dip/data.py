"""``python -m dip.data``: the command line of dip/cli/data.py (run it with ``--help``)."""
from .cli.data import main

if __name__ == "__main__":
    main()
