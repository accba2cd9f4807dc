"""A 3-master Redis Cluster on loopback for the ``native-cluster`` configuration.

``redis-server --cluster-enabled yes`` three times (ports whose bus port, +10000, is free too),
joined by ``redis-cli --cluster create``; stopped and its files removed afterwards.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path


def _free_pair() -> int:
    for _ in range(200):
        port = random.randint(20000, 45000)  # noqa: S311 (a port, not a secret)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free loopback ports for a Redis Cluster")


class Cluster:
    def __init__(self, workdir: Path, masters: int = 3) -> None:
        if not (shutil.which("redis-server") and shutil.which("redis-cli")):
            raise RuntimeError("native-cluster needs redis-server and redis-cli on PATH")
        self.workdir, self.ports = workdir, [_free_pair() for _ in range(masters)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        for port in self.ports:
            node = self.workdir / str(port)
            node.mkdir(parents=True, exist_ok=True)
            self.procs.append(
                subprocess.Popen(  # noqa: S603
                    [  # noqa: S607
                        "redis-server",
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(node),
                        "--cluster-enabled",
                        "yes",
                        "--loglevel",
                        "warning",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            self._wait(lambda port=port: self._cli(port, "PING") == "PONG")
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(  # noqa: S603
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],  # noqa: S607
            check=True,
            capture_output=True,
            timeout=60,
        )
        for port in self.ports:
            self._wait(lambda port=port: "cluster_state:ok" in self._cli(port, "CLUSTER", "INFO"))

    def _cli(self, port: int, *args: str) -> str:
        done = subprocess.run(  # noqa: S603
            ["redis-cli", "-p", str(port), *args],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
        )
        return done.stdout.strip()

    @staticmethod
    def _wait(ready, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)
