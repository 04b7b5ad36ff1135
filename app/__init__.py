"""Composition root: builds the server from its parts and owns the `vision` command.

`app` may import `serving`, `vision` and the integration packages; none of them imports `app`.
"""
