"""The stand-in object store: moto's S3 server with the /health answer RustFS gives (compose's healthcheck
asks it), on port 9000. moto accepts any credentials, so the RUSTFS_* key files are not read."""

import signal
import sys
from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIEnvironment

from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

s3 = DomainDispatcherApplication(create_backend_app)


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/health":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    return s3(environ, start_response)  # type: ignore[no-any-return]


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
HOST = "0.0.0.0"  # noqa: S104 (a container: every interface of its own network)
run_simple(HOST, 9000, app, threaded=True, request_handler=MotoRequestHandler)
