"""``python -m benchmarks``: nilva-session against DRF authtoken, knox and simplejwt.

Runs each configuration in a process of its own (``benchmarks/suite.py``), prints the tables and
one PASS/FAIL line per target, and writes ``benchmarks/results/<timestamp>.json``.

Configurations: ``embedded`` (SQLite file + LocMemCache, the demo default), ``redis``
(PostgreSQL + Django's ``RedisCache``) and ``django-redis`` (PostgreSQL + django-redis). The
targets are judged on ``redis`` and ``django-redis``. ``--scale`` adds the 1,000,000-row run.

PostgreSQL: the server of ``DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432``); the
benchmark creates and drops its own databases there (``nilva_bench``, ``nilva_bench_scale``),
never the one named in the URL. Redis: ``REDIS_URL`` (default ``redis://127.0.0.1:6379/13``);
only keys under a per-run prefix are written, and they are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from benchmarks import cluster as cluster_module
from benchmarks import report

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = ("embedded", "redis", "django-redis", "native", "native-cluster")


def machine() -> dict[str, Any]:
    cpu, memory = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu or platform.processor(),
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def git_revision() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "nilva_session"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "") if head else None
    except OSError:
        return None


def reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def database_url(name: str) -> str:
    parsed = urlparse(os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432")
    return urlunparse(parsed._replace(path=f"/{os.environ.get('BENCH_DB_NAME', name)}"))


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/13"


def run_config(config: str, args: argparse.Namespace, module: str = "benchmarks.suite") -> dict:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="benchmarks.settings",
        BENCH_CONFIG=config,
        BENCH_KEY_PREFIX=f"nilva-bench-{os.getpid()}-{config}",
        BENCH_REDIS_URL=redis_url(),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    tmp = tempfile.mkdtemp(prefix="nilva-bench-")
    if config == "embedded":
        env["BENCH_CACHE"] = "locmem"
        env["BENCH_SQLITE_PATH"] = os.path.join(tmp, "db.sqlite3")
        env.pop("BENCH_DATABASE_URL", None)
    else:
        env["BENCH_CACHE"] = "django-redis" if config == "django-redis" else "redis"
        name = {"benchmarks.scale": "nilva_bench_scale", "benchmarks.load": "nilva_bench_load"}.get(
            module, "nilva_bench"
        )
        env["BENCH_DATABASE_URL"] = database_url(name)
    if config.startswith("native"):
        env["BENCH_STORE"] = "native"
    if config == "native-cluster":
        cluster = cluster_module.Cluster(Path(tmp) / "cluster")
        cluster.start()
        env.update(BENCH_STORE_URL=cluster.url(), BENCH_STORE_CLUSTER="1")
    out = os.path.join(tmp, "result.json")
    command = [sys.executable, "-m", module, "--out", out]
    if module == "benchmarks.suite":
        command += ["--rounds", str(args.rounds), "--batch", str(args.batch)]
        if args.profile:
            command += ["--profile", args.profile]
    print(f"== {config}{' (scale)' if module.endswith('scale') else ''}", file=sys.stderr)
    started = time.monotonic()
    try:
        subprocess.run(command, env=env, cwd=ROOT, check=True)  # noqa: S603 (this interpreter)
    finally:
        if config == "native-cluster":
            cluster.stop()
    with open(out) as f:
        result = json.load(f)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated, from {', '.join(CONFIGS)} (default: all)",
    )
    parser.add_argument("--rounds", type=int, default=40, help="rounds of every scheme (40)")
    parser.add_argument("--batch", type=int, default=50, help="requests per scheme per round (50)")
    parser.add_argument("--quick", action="store_true", help="10 rounds of 20: a smoke run")
    parser.add_argument("--scale", action="store_true", help="also the 1,000,000-row run")
    parser.add_argument("--scale-only", action="store_true", help="only the 1,000,000-row run")
    parser.add_argument("--scale-rows", type=int, default=1_000_000)
    parser.add_argument("--profile", metavar="SCHEME", help="profile one scheme, print, exit")
    parser.add_argument(
        "--busy",
        action="store_true",
        help="keep one CPU-bound process spinning meanwhile: CPUs that never idle, as on a busy "
        "server (round trips then skip the wake-up of an idle CPU)",
    )
    parser.add_argument(
        "--load",
        action="store_true",
        help="also 4 gunicorn workers under wrk: requests/s of ours (native store) and peers",
    )
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--no-save", action="store_true", help="do not write results JSON")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.batch = 10, 20

    configs = [] if args.scale_only else [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    services_up = reachable(database_url("x"), 5432) and reachable(redis_url(), 6379)
    if not services_up:
        skipped = [c for c in configs if c != "embedded"]
        if args.scale or args.scale_only:
            skipped.append("scale")
        if skipped:
            print(
                "PostgreSQL or Redis is not reachable (DATABASE_URL / REDIS_URL): "
                f"skipping {', '.join(skipped)}",
                file=sys.stderr,
            )
        configs = [c for c in configs if c == "embedded"]

    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "command": "bash benchmarks/run " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "configs": {},
    }
    results["busy"] = args.busy
    spinner = None
    if args.busy:
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for config in configs:
            results["configs"][config] = run_config(config, args)
            if args.profile:
                return 0
        if args.load and services_up:
            results["load"] = run_config("native", args, module="benchmarks.load")
        if (args.scale or args.scale_only) and services_up:
            env_rows = os.environ.get("BENCH_SCALE_ROWS")
            os.environ["BENCH_SCALE_ROWS"] = env_rows or str(args.scale_rows)
            results["scale"] = run_config("redis", args, module="benchmarks.scale")
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()

    if hasattr(os, "getloadavg"):
        results["machine"]["load_average_at_end"] = os.getloadavg()
    text, verdicts = report.render(results)
    results["targets"] = verdicts
    print(text)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
        path = RESULTS / f"{stamp}.json"
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"results: {path.relative_to(ROOT)}")
    if args.write_docs:
        report.write_docs(
            ROOT / "docs" / "benchmarks.md",
            results,
            text,
            "results-busy" if args.busy else "results",
        )
        print("docs/benchmarks.md updated")
    return 1 if any(v["status"] == "FAIL" for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
