"""``python -m dip.evaluate``: the command line of dip/cli/evaluate.py (run it with ``--help``)."""
from .cli.evaluate import main

if __name__ == "__main__":
    main()
