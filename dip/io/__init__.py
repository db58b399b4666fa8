"""Files in and out (docs/architecture.md): datasets and shards, image formats and streams, image writers, checkpoint
files and weights in the released layout, atomic writes, plots. Imports nothing else of dip."""
