"""The sub-commands of ``rlhf label`` (rlhf.cli.label), one module each."""
