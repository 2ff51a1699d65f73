"""Built-in example oracles (the in-process search runs on them without any data)."""
