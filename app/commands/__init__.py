"""The `vision` subcommands that belong to the composition root (serve, infer, task dispatch)."""
