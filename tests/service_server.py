"""Start the real HTTP service in a subprocess for tests.

    from service_server import running_server

    with running_server({"EARMARK_MODEL": "tiny.en"}) as url:   # waits until /readyz is 200
        httpx.get(f"{url}/v1/models")

The server is ``earmark serve`` (``python -m tagger.cli serve``) on a free loopback port, with
``EARMARK_OFFLINE=1`` and the given environment on top of this process's. Its JSON-lines log goes
to a temporary file; ``server_process`` gives access to it (and to the process).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen
    log_path: Path
    api_key: str | None = None

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def wait_until(self, path: str, timeout: float, statuses: tuple[int, ...] = (200,)) -> httpx.Response:
        """Poll ``path`` until it answers one of ``statuses``; fail with the server's log if it dies or times out."""
        end = time.monotonic() + timeout
        last: str = "no answer"
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.logs()[-4000:]}")
            try:
                response = httpx.get(self.url + path, headers=self.headers(), timeout=2.0)
                if response.status_code in statuses:
                    return response
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as error:
                last = repr(error)
            time.sleep(0.1)
        raise TimeoutError(f"{path} did not answer {statuses} within {timeout} s (last: {last}):\n{self.logs()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@contextmanager
def server_process(env: dict[str, str] | None = None, *, ready: bool = True, timeout: float = 180.0) -> Iterator[ServerProcess]:
    """Run the service; with ``ready`` wait for /readyz = 200, else only until it answers HTTP at all.

    Polling uses the first of ``EARMARK_API_KEYS`` when the environment sets keys.
    """
    port = free_port()
    full_env = {**os.environ, "EARMARK_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    keys = [k.strip() for k in full_env.get("EARMARK_API_KEYS", "").split(",") if k.strip()]
    handle, log_name = tempfile.mkstemp(prefix="earmark-server-", suffix=".log")
    with os.fdopen(handle, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "tagger.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    server = ServerProcess(url=f"http://127.0.0.1:{port}", process=process, log_path=Path(log_name),
                           api_key=keys[0] if keys else None)
    try:
        server.wait_until("/healthz", timeout, statuses=(200, 401))
        if ready:
            server.wait_until("/readyz", timeout)
        yield server
    finally:
        server.stop()
        try:
            server.log_path.unlink()
        except OSError:
            pass


@contextmanager
def running_server(env: dict[str, str] | None = None, *, ready: bool = True, timeout: float = 180.0) -> Iterator[str]:
    """Run the service and yield its base URL (``http://127.0.0.1:PORT``); stop it on exit."""
    with server_process(env, ready=ready, timeout=timeout) as server:
        yield server.url
