"""The node's operator API on the server's HTTP app, under `/dicom-node/`: jobs and the outbox.

JSON only, UIDs and states only (no patient attributes), `{"error": ...}` bodies as the rest of
the app: 400 for a bad query, 404 for an unknown id, 409 for an item in the wrong state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from dicom_node.jobs import JobStore
from dicom_node.model import JobState
from dicom_node.outbox import ItemState, Outbox, OutboxStateError

MAX_LIMIT = 1000
S = TypeVar("S", JobState, ItemState)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _limit(request: Request) -> int:
    text = request.query_params.get("limit", "100")
    if not text.isdigit() or not 0 < int(text) <= MAX_LIMIT:
        raise ValueError(f"limit: write a whole number from 1 to {MAX_LIMIT}")
    return int(text)


def _state(request: Request, states: type[S]) -> S | None:
    text = request.query_params.get("state")
    if text is None:
        return None
    try:
        return states(text)
    except ValueError:
        raise ValueError(f"state: one of {', '.join(s.value for s in states)}") from None


def node_routes(store: JobStore, outbox: Outbox) -> list[BaseRoute]:
    """`Mount("/dicom-node")` with the jobs and outbox routes, for `build_http_app(mounts=...)`."""

    async def list_jobs(request: Request) -> Response:
        try:
            state, limit = _state(request, JobState), _limit(request)
        except ValueError as error:
            return _error(400, str(error))
        jobs = await run_in_threadpool(store.list, state, limit)
        return JSONResponse({"jobs": [job.to_json() for job in jobs]})

    async def get_job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job = await run_in_threadpool(store.get, job_id)
        if job is None:
            return _error(404, f"no job {job_id!r}")
        items = await run_in_threadpool(outbox.list, None, MAX_LIMIT, job_id)
        return JSONResponse({**job.to_json(), "outbox": [item.to_json() for item in items]})

    async def list_items(request: Request) -> Response:
        try:
            state, limit = _state(request, ItemState), _limit(request)
        except ValueError as error:
            return _error(400, str(error))
        items = await run_in_threadpool(outbox.list, state, limit)
        return JSONResponse({"items": [item.to_json() for item in items]})

    def operation(name: str) -> Callable[[Request], Awaitable[Response]]:
        act = {"retry": outbox.retry, "discard": outbox.discard}[name]

        async def endpoint(request: Request) -> Response:
            item_id = request.path_params["item_id"]
            try:
                item = await run_in_threadpool(act, item_id)
            except KeyError:
                return _error(404, f"no outbox item {item_id}")
            except OutboxStateError as error:
                return _error(409, str(error))
            return JSONResponse(item.to_json())

        return endpoint

    return [
        Mount(
            "/dicom-node",
            routes=[
                Route("/jobs", list_jobs, methods=["GET"]),
                Route("/jobs/{job_id}", get_job, methods=["GET"]),
                Route("/outbox", list_items, methods=["GET"]),
                Route("/outbox/{item_id:int}/retry", operation("retry"), methods=["POST"]),
                Route("/outbox/{item_id:int}/discard", operation("discard"), methods=["POST"]),
            ],
        )
    ]
