"""``python -m dip.train``: the command line of dip/cli/train.py (run it with ``--help``)."""
from .cli.train import main

if __name__ == "__main__":
    main()
