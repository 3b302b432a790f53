"""Running the gateway: one process per worker on a shared listening socket.

`serve()` binds the socket once. With one worker the gateway runs in this process; with more,
this process supervises `--workers N` child processes that inherit the socket (the kernel hands
each new connection to one of them), forwards SIGHUP to each (every worker reloads in place),
stops them on SIGTERM/SIGINT (each drains: requests in flight finish, plugins and their queues
flush), and starts a replacement when one dies unexpectedly.

Each worker is a fresh interpreter (`python -m llmgw.serve --worker-fd ...`), not a fork, so no
thread pool or event loop state of the parent leaks into it.

The supervisor also creates the shared-memory counters file (rate-limit buckets and budgets of
governance) before the first worker starts and names it in `LLMGW_COUNTERS`, so every worker,
including a replacement, maps the same table: one limit per key across N workers, not N. The file
is removed when the supervisor exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time

# numpy's BLAS (the MiniLM embedder of the semantic cache) starts a thread per core by default;
# they spin against the worker's event loop on the same cores: measured, one short prompt's
# embedding p99 210-500 ms with them vs 16-38 ms with one thread. Set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

__all__ = ["serve"]

log = logging.getLogger("llmgw")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _raise_fd_limit() -> None:
    """Open files bound the connections a worker can hold: use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


async def _worker_main(sock: socket.socket, config_path: str | None, worker_id: int, workers: int,
                       metrics_sock: socket.socket | None) -> None:
    from llmgw.server import App, install_signals

    app = App(config_path, worker_id=worker_id, workers=workers)
    stop = asyncio.Event()
    install_signals(app, stop)
    await app.start(sock, metrics_sock)
    await stop.wait()
    log.info("worker %d stopping: draining requests in flight", worker_id)
    await app.stop()


def run_worker(sock: socket.socket, config_path: str | None, worker_id: int = 0, workers: int = 1,
               metrics_sock: socket.socket | None = None) -> None:
    """Run one worker on `sock` until SIGTERM/SIGINT (uvloop when available)."""
    _raise_fd_limit()
    try:
        import uvloop

        uvloop.run(_worker_main(sock, config_path, worker_id, workers, metrics_sock))
    except ImportError:
        asyncio.run(_worker_main(sock, config_path, worker_id, workers, metrics_sock))


def serve(config_path: str, host: str, port: int, workers: int = 1,
          metrics_addr: tuple[str, int] | None = None) -> int:
    """Bind `host:port` (and `metrics_addr`, observability.metrics.port) and serve until stopped
    (see the module docstring)."""
    setup_logging()
    sock = _bind(host, port)
    metrics_sock = _bind(*metrics_addr) if metrics_addr is not None else None
    if workers <= 1:
        run_worker(sock, config_path, metrics_sock=metrics_sock)
        return 0
    return _supervise(sock, config_path, workers, metrics_sock)


def _spawn(sock: socket.socket, config_path: str, worker_id: int, workers: int,
           metrics_sock: socket.socket | None) -> subprocess.Popen[bytes]:
    fds = [sock.fileno()]
    argv = [sys.executable, "-m", "llmgw.serve", "--worker-fd", str(fds[0]), "--config", config_path,
            "--worker-id", str(worker_id), "--workers", str(workers)]
    if metrics_sock is not None:
        fds.append(metrics_sock.fileno())
        argv += ["--metrics-fd", str(fds[1])]
    return subprocess.Popen(argv, pass_fds=tuple(fds))


def _supervise(sock: socket.socket, config_path: str, workers: int, metrics_sock: socket.socket | None) -> int:
    import shutil
    import tempfile

    from llmgw._core import SharedCounters
    from llmgw.governance.counters import ENV, local_counters_path
    from llmgw.observability.metrics import DIR_ENV

    counters_path = os.environ.get(ENV) or local_counters_path()
    owned = ENV not in os.environ
    if owned:
        SharedCounters(counters_path, create=True)
        os.environ[ENV] = counters_path
    # Where each worker publishes its metrics for the one that answers a scrape.
    metrics_dir = tempfile.mkdtemp(prefix="llmgw-metrics-")
    os.environ[DIR_ENV] = metrics_dir
    try:
        return _run_children(sock, config_path, workers, metrics_sock)
    finally:
        os.environ.pop(DIR_ENV, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if owned:
            os.environ.pop(ENV, None)
            try:
                os.unlink(counters_path)
            except OSError:
                pass


def _run_children(sock: socket.socket, config_path: str, workers: int, metrics_sock: socket.socket | None) -> int:
    children = {i: _spawn(sock, config_path, i, workers, metrics_sock) for i in range(workers)}
    stopping = False
    pending_hup = False

    def on_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    def on_hup(signum: int, _frame: object) -> None:
        nonlocal pending_hup
        pending_hup = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    log.info("supervising %d workers: %s", workers, ", ".join(str(c.pid) for c in children.values()))
    while not stopping:
        time.sleep(0.1)
        if pending_hup:
            pending_hup = False
            for child in children.values():
                if child.poll() is None:
                    child.send_signal(signal.SIGHUP)
        for i, child in list(children.items()):
            if child.poll() is not None and not stopping:
                log.error("worker %d (pid %d) exited with %s; starting a new one", i, child.pid, child.returncode)
                time.sleep(0.5)
                children[i] = _spawn(sock, config_path, i, workers, metrics_sock)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 60
    for child in children.values():
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            log.error("worker pid %d did not stop in time; killing it", child.pid)
            child.kill()
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process started by the supervisor."""
    parser = argparse.ArgumentParser(prog="llmgw.serve")
    parser.add_argument("--worker-fd", type=int, required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--worker-id", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--metrics-fd", type=int)
    args = parser.parse_args(argv)
    setup_logging()
    sock = socket.socket(fileno=args.worker_fd)
    sock.setblocking(False)
    metrics_sock = None
    if args.metrics_fd is not None:
        metrics_sock = socket.socket(fileno=args.metrics_fd)
        metrics_sock.setblocking(False)
    run_worker(sock, args.config, args.worker_id, args.workers, metrics_sock)


if __name__ == "__main__":
    main()
