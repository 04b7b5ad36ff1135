"""`vision serve --workers N`: the parent process that runs N `vision serve` workers.

Each worker is `python -m app serve` with the same flags plus `--reuse-port` (SO_REUSEPORT on
both ports); `serving/workers.py` supervises them (restart, SIGTERM to all, metrics folder).
"""

from __future__ import annotations

import argparse
import logging
import sys

from serving.workers import run_workers


def check_worker_flags(args: argparse.Namespace) -> str | None:
    """Why these flags cannot run as several workers (the message names the fix), or None."""
    if args.workers < 1:
        return f"--workers must be >= 1, not {args.workers}"
    if args.grpc_port == 0 or args.http_port == 0:
        return (
            "--workers N needs fixed ports (every worker binds the same ones); give --grpc-port "
            "and --http-port other than 0"
        )
    if args.dicom_port is not None or args.dicom_config is not None:
        return (
            "the DICOM node keeps one spool and outbox: run it with --workers 1, or as its own "
            "`vision dicom-node run`, beside the workers"
        )
    if getattr(args, "review_dir", None) is not None:
        return "the review tool runs in a single-worker server: drop --review-dir or --workers"
    return None


def serve_workers(args: argparse.Namespace, argv: list[str]) -> int:
    """Run `args.workers` servers on the same ports until SIGTERM / SIGINT; the exit code."""
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    problem = check_worker_flags(args)
    if problem:
        print(f"vision serve: {problem}", file=sys.stderr)
        return 2
    # The last --workers wins in argparse: each worker is a plain single-process server.
    command = [sys.executable, "-m", "app", "serve", *argv, "--workers", "1", "--reuse-port"]
    return run_workers(command, args.workers, args.drain_timeout)
