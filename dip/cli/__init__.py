"""The command lines (docs/architecture.md): argument domains and shared flag groups (args.py), then one module per
command — train, sample, evaluate, convert, data — each a parser and the code that turns its arguments into calls
of the layers below. ``python -m dip.<command>`` and the ``dip-<command>`` scripts run them."""
