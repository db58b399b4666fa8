"""``python -m dip.convert``: the command line of dip/cli/convert.py (run it with ``--help``)."""
from .cli.convert import main

if __name__ == "__main__":
    main()
