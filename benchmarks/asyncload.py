"""Requests/s of gunicorn (4 sync workers, the DRF view) and uvicorn (4 workers, the adrf view).

Run by ``python -m benchmarks --asgi-load`` in a process of its own per configuration: migrates
the benchmark database, opens the credentials (``load.credentials``), starts both servers on the
benchmark project (``benchmarks.wsgi``, ``benchmarks.asgi``) and runs ``wrk`` on loopback (a
fixed number of connections and seconds per scheme) against each server's views in turn, twice,
keeping the better run of each. Both servers are up the whole time; only one is loaded at once.
Writes a JSON document.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import services
from benchmarks.load import credentials, free_port, wrk

ROOT = Path(__file__).resolve().parent.parent
SCHEMES = {
    "gunicorn_base": ("gunicorn", "/base/", "baseline", "gunicorn, DRF view, no authentication"),
    "gunicorn_token": (
        "gunicorn",
        "/ours/token/",
        "ours_token_warm",
        "gunicorn, DRF view, `UserSessionDBTokenAuthentication`",
    ),
    "gunicorn_jwt": (
        "gunicorn",
        "/ours/jwt/",
        "ours_jwt_warm",
        "gunicorn, DRF view, `UserSessionDBJwtAuthentication`",
    ),
    "uvicorn_base": (
        "uvicorn",
        "/async/base/",
        "baseline",
        "uvicorn, adrf view, no authentication",
    ),
    "uvicorn_token": (
        "uvicorn",
        "/async/token/",
        "ours_token_warm",
        "uvicorn, adrf view, `AsyncTokenAuthentication`",
    ),
    "uvicorn_jwt": (
        "uvicorn",
        "/async/jwt/",
        "ours_jwt_warm",
        "uvicorn, adrf view, `AsyncJWTAuthentication`",
    ),
}


def server_commands(workers: int, ports: dict[str, int]) -> dict[str, list[str]]:
    """Return the command line of each server (access logs off on both)."""
    return {
        "gunicorn": [
            sys.executable,
            "-m",
            "gunicorn",
            "benchmarks.wsgi:application",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{ports['gunicorn']}",
            "--log-level",
            "warning",
        ],
        "uvicorn": [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.asgi:application",
            "--workers",
            str(workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(ports["uvicorn"]),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
    }


def wait_for(port: int, server: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """Return once ``port`` accepts connections; raise if the server exits or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {server.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("the load run needs wrk (apt-get install -y wrk)")
    missing = [m for m in ("adrf", "uvicorn", "gunicorn") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(
            f"the ASGI load run needs {', '.join(missing)}: pip install adrf 'uvicorn[standard]'"
        )
    services.create_database()
    ports = {"gunicorn": free_port(), "uvicorn": free_port()}
    servers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        headers = credentials()
        from django.db import connections

        connections.close_all()
        for name, command in server_commands(args.workers, ports).items():
            servers[name] = subprocess.Popen(command, cwd=ROOT)  # noqa: S603 (this interpreter)
        for name, server in servers.items():
            wait_for(ports[name], server)
        result: dict[str, dict] = {}
        for _ in range(2):  # two passes; the better of each scheme (the machine drifts)
            for name, (server, path, credential, label) in SCHEMES.items():
                url = f"http://127.0.0.1:{ports[server]}{path}"
                wrk(url, headers[credential], 1, args.connections)  # warm every worker
                row = wrk(url, headers[credential], args.seconds, args.connections)
                best = result.get(name)
                if best is None or row["rps"] > best["rps"]:
                    result[name] = {"label": label, **row}
                print(f"  [asgi-load] {name}: {row['rps']:,.0f} requests/s", file=sys.stderr)
    finally:
        for server in servers.values():
            server.send_signal(signal.SIGTERM)
        for server in servers.values():
            server.wait(30)
        services.teardown()
    with open(args.out, "w") as out:
        json.dump(
            {
                "tool": "wrk -t2",
                "connections": args.connections,
                "seconds": args.seconds,
                "workers": args.workers,
                "servers": f"gunicorn {args.workers} sync workers, uvicorn {args.workers} "
                "workers (its default loop and HTTP parser: uvloop and httptools when "
                "installed), access logs off",
                "schemes": result,
            },
            out,
            indent=2,
        )


if __name__ == "__main__":
    main()
