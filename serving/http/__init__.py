"""The HTTP face of the server (Starlette under uvicorn): metrics, KServe v2 REST, more mounts.

`build_http_app` assembles the application; `HttpServer` runs it in the server's event loop.
"""

from serving.http.app import build_http_app
from serving.http.server import HttpServer

__all__ = ["HttpServer", "build_http_app"]
