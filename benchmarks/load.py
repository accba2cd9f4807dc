"""Requests/s of 4 gunicorn workers serving a warm credential: ours (native store) vs the peers.

Run by ``python -m benchmarks --load`` in a process of its own: migrates the benchmark
database, opens the credentials, starts gunicorn (4 sync workers, the benchmark project), then
runs ``wrk`` on loopback (bounded: a fixed number of connections and seconds per scheme) against
each scheme's URL in turn, twice, keeping the better run of each. Writes a JSON document.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import services

SCHEMES = {
    "ours_token_warm": ("/ours/token/", "nilva-session, opaque token (native store, copies)"),
    "ours_jwt_warm": ("/ours/jwt/", "nilva-session, JWT (native store, copies)"),
    "drf_token": ("/drf/token/", "DRF TokenAuthentication"),
    "simplejwt_stateless": ("/simplejwt/stateless/", "simplejwt JWTStatelessUserAuthentication"),
    "baseline": ("/base/", "no authentication"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def credentials() -> dict[str, str]:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token
    from rest_framework_simplejwt.tokens import AccessToken

    from benchmarks.harness import CLIENT_IP, DESKTOP_UA
    from nilva_session import sessions
    from nilva_session.jwt import access_token_for_session, refresh_token_for_session

    call_command("migrate", verbosity=0)

    class Client:
        META = {"HTTP_USER_AGENT": DESKTOP_UA, "REMOTE_ADDR": CLIENT_IP}

    user = get_user_model().objects.create_user("load", "load@example.com", "load-password")
    _session, token = sessions.open_session(user, Client())
    jwt_session, _ = sessions.open_session(user, Client())
    ours_access = access_token_for_session(
        refresh_token_for_session(jwt_session, user), jwt_session
    )
    return {
        "ours_token_warm": f"Token {token}",
        "ours_jwt_warm": f"Bearer {ours_access}",
        "drf_token": f"Token {Token.objects.create(user=user).key}",
        "simplejwt_stateless": f"Bearer {AccessToken.for_user(user)}",
        "baseline": "",
    }


def wrk(url: str, header: str, seconds: int, connections: int) -> dict[str, float]:
    from benchmarks.harness import DESKTOP_UA

    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-H",
        f"User-Agent: {DESKTOP_UA}",
    ]
    if header:
        command += ["-H", f"Authorization: {header}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout  # noqa: S603
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": rps,
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        "non_2xx": int(non_2xx[1]) if non_2xx else 0,
        "socket_errors": errors[0] if errors else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("the load run needs wrk (apt-get install -y wrk)")
    services.create_database()
    port = free_port()
    server = None
    try:
        headers = credentials()
        from django.db import connections

        connections.close_all()
        server = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "gunicorn",
                "benchmarks.wsgi:application",
                "-w",
                str(args.workers),
                "-b",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
            ],
            cwd=Path(__file__).resolve().parent.parent,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        result: dict[str, dict] = {}
        for _ in range(2):  # two passes; the better of each scheme (the machine drifts)
            for name, (path, label) in SCHEMES.items():
                url = f"http://127.0.0.1:{port}{path}"
                wrk(url, headers[name], 1, args.connections)  # warm every worker
                row = wrk(url, headers[name], args.seconds, args.connections)
                best = result.get(name)
                if best is None or row["rps"] > best["rps"]:
                    result[name] = {"label": label, **row}
                print(f"  [load] {name}: {row['rps']:,.0f} requests/s", file=sys.stderr)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
        services.teardown()
    with open(args.out, "w") as out:
        json.dump(
            {
                "tool": "wrk -t2",
                "connections": args.connections,
                "seconds": args.seconds,
                "workers": args.workers,
                "schemes": result,
            },
            out,
            indent=2,
        )


if __name__ == "__main__":
    main()
