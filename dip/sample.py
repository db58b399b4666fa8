"""``python -m dip.sample``: the command line of dip/cli/sample.py (run it with ``--help``)."""
from .cli.sample import main

if __name__ == "__main__":
    main()
