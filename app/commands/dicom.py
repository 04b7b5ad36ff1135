"""`vision dicom-node run | check-rules`: the DICOM node as its own process, and rule checks.

`run` takes the flags of `vision serve` (models, DICOM node) and serves the node with the
data plane in-process; gRPC is off unless `--grpc-port` is given, the HTTP app (STOW-RS, the
job API, metrics) stays on. `check-rules` is `dicom_node.cli`'s.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from app.commands.serve import build_parser, config_from, dicom_settings_from, serve
from vision.errors import ConfigError


def run(argv: list[str]) -> int:
    """`vision dicom-node run --dicom-port N [serve flags]`."""
    parser = build_parser()
    parser.prog = "vision dicom-node run"
    parser.set_defaults(grpc_port=-1)
    args = parser.parse_args(argv)
    dicom = dicom_settings_from(args)
    if dicom is None:
        raise ConfigError("vision dicom-node run needs --dicom-port PORT (or --dicom-config FILE)")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(serve(config_from(args), dicom))


def main(argv: list[str]) -> int:
    """`vision dicom-node SUBCOMMAND ...`."""
    if argv and argv[0] == "run":
        return run(argv[1:])
    from dicom_node.cli import main as node_main

    return int(node_main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
