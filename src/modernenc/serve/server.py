"""`modernenc serve`: check everything, load the model, bind the port, then run the app under uvicorn.

Every reason the server could not serve (model folder, dtype, settings, API keys file, audit database, port)
is found before the port is bound and reported as one sentence. After binding it logs one line: URL, model
digest, dtype, threshold, audit database. SIGTERM drains: no new connections, queued batches finish and
commit, exit code 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn

from modernenc.serve.settings import ServeSettings

logger = logging.getLogger("modernenc.serve")


def _configure_logging() -> None:
    """Our lines on stderr, unless the host program (a test runner, an embedding app) set up logging."""
    if logging.getLogger().handlers:
        return
    package = logging.getLogger("modernenc")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port), or an OSError that says which and why."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise OSError(f"cannot listen on {host}:{port}: unknown host ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def startup_line(url: str, engine, settings: ServeSettings, store_location: str, keys) -> str:
    policy = engine.default_policy
    if policy is None:  # a span tagger: no sentence decision
        rule = f"span tagger ({', '.join(engine.label_names)}) on /v1/extract"
    else:
        lo, hi = policy.review_band
        rule = f"threshold {policy.threshold:.6g} ({policy.threshold_name}) review band [{lo:.6g}, {hi:.6g}]"
    return (
        f"modernenc serve: {url} model sha256:{engine.digest} dtype {engine.dtype} {rule} audit "
        f"{store_location} ({'texts stored' if settings.audit_store_text else 'text hashes only'}) "
        f"keys {len(keys.names) if keys else 'none (open to anyone who can connect)'}"
    )


def prepare(
    model_dir: str | Path,
    settings: ServeSettings,
    dtype: str = "fp32",
    device: str = "auto",
    api_keys: str | Path | None = None,
):
    """Everything before the port: (app, engine, store, keys). Raises with one sentence on any problem."""
    from modernenc.serve.app import create_app
    from modernenc.serve.audit import SQLiteAuditStore
    from modernenc.serve.auth import read_api_keys
    from modernenc.serve.engine import load_engine

    keys = read_api_keys(api_keys) if api_keys is not None else None
    settings.check(max_length=2)  # the cheap checks before loading weights; max_length after
    engine = load_engine(model_dir, dtype, device)
    settings.check(max_length=engine.max_length)
    store = SQLiteAuditStore(settings.audit_db)
    return create_app(engine, settings, store, keys), engine, store, keys


def run_server(
    model_dir: str | Path,
    settings: ServeSettings,
    dtype: str = "fp32",
    device: str = "auto",
    api_keys: str | Path | None = None,
) -> None:
    _configure_logging()
    app, engine, store, keys = prepare(model_dir, settings, dtype, device, api_keys)
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError:
        store.close()
        raise
    state = app.state.serve
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=settings.access_log,
        timeout_graceful_shutdown=settings.drain_timeout_s,
        timeout_keep_alive=settings.keep_alive_s,
        lifespan="on",
    )
    server = Server(config)
    server.on_started = lambda: logger.info(
        startup_line(url_of(sock), engine, settings, store.location, keys)
    )
    server.on_exit_signal = state.begin_drain
    state.on_fatal = server.request_exit
    if keys is None and settings.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("no --api-keys: anyone who can reach %s can classify and review", settings.host)
    # uvicorn re-raises the signal it caught once it has shut down; with the default SIGTERM action that
    # would kill the process (exit -15) after a clean drain. The drain is the answer to SIGTERM: exit 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    if state.fatal:
        raise RuntimeError(state.fatal)
    logger.info("modernenc serve: stopped; every answered decision is committed to %s", store.location)


class Server(uvicorn.Server):
    """uvicorn's server, telling the app when it listens and when a signal asks it to drain."""

    on_started: Callable[[], None] | None = None
    on_exit_signal: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit and self.on_exit_signal is not None:
            try:  # a signal handler runs between the loop's callbacks: hand the work to the loop
                asyncio.get_running_loop().call_soon_threadsafe(self.on_exit_signal)
            except RuntimeError:  # no loop running yet
                pass
        super().handle_exit(sig, frame)

    def request_exit(self) -> None:
        self.should_exit = True
