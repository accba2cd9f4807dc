"""``python -m benchmarks``: nilva-session against DRF authtoken, knox and simplejwt.

Runs each configuration in a process of its own (``benchmarks/suite.py``), prints the tables and
one PASS/FAIL line per target, and writes ``benchmarks/results/<timestamp>.json``.

Configurations: ``embedded`` (SQLite file + LocMemCache, the demo default), ``redis``
(PostgreSQL + Django's ``RedisCache``) and ``django-redis`` (PostgreSQL + django-redis). The
targets are judged on ``redis`` and ``django-redis``. ``--scale`` adds the 1,000,000-row run.
``--async`` adds the warm path of the async entry points and of an adrf view against the sync
ones (``benchmarks/asyncpath.py``) on those configurations, ``native`` and ``native-uncopied``
(the native store with ``LOCAL_CACHE`` off); ``--asgi-load`` gunicorn against uvicorn.

PostgreSQL: the server of ``DATABASE_URL`` (default ``postgres://postgres@127.0.0.1:5432``); the
benchmark creates and drops its own databases there (``nilva_bench``, ``nilva_bench_scale``,
``nilva_bench_async`` ...; ``BENCH_DB_NAME`` names them all instead), never the one named in the
URL. Redis: ``REDIS_URL`` (default ``redis://127.0.0.1:6379/13``); only keys under a per-run
prefix are written, and they are deleted afterwards.
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
ASYNC_CONFIGS = ("embedded", "redis", "django-redis", "native", "native-uncopied")
ASGI_LOAD_CONFIGS = ("redis", "native")
DATABASE_NAMES = {
    "benchmarks.scale": "nilva_bench_scale",
    "benchmarks.load": "nilva_bench_load",
    "benchmarks.asyncpath": "nilva_bench_async",
    "benchmarks.asyncload": "nilva_bench_async_load",
}


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
        env["BENCH_DATABASE_URL"] = database_url(DATABASE_NAMES.get(module, "nilva_bench"))
    if config.startswith("native"):
        env["BENCH_STORE"] = "native"
    env.pop("BENCH_LOCAL_CACHE", None)
    if config == "native-uncopied":
        env["BENCH_LOCAL_CACHE"] = "0"
    if config == "native-cluster":
        cluster = cluster_module.Cluster(Path(tmp) / "cluster")
        cluster.start()
        env.update(BENCH_STORE_URL=cluster.url(), BENCH_STORE_CLUSTER="1")
    out = os.path.join(tmp, "result.json")
    command = [sys.executable, "-m", module, "--out", out]
    if module in ("benchmarks.suite", "benchmarks.asyncpath"):
        command += ["--rounds", str(args.rounds), "--batch", str(args.batch)]
    if module == "benchmarks.suite" and args.profile:
        command += ["--profile", args.profile]
    if module == "benchmarks.asyncload" and args.quick:
        command += ["--seconds", "2"]
    what = {"benchmarks.scale": " (scale)", "benchmarks.asyncpath": " (async)"}.get(module, "")
    print(f"== {config}{what}", file=sys.stderr)
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
        default=None,
        help=f"comma-separated, from {', '.join(dict.fromkeys(CONFIGS + ASYNC_CONFIGS))} "
        "(default: all; --async: all of its own)",
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
    parser.add_argument(
        "--async",
        dest="async_path",
        action="store_true",
        help="also the warm path of aio / adrf against the sync one (in process, per "
        f"configuration: {', '.join(ASYNC_CONFIGS)})",
    )
    parser.add_argument("--async-only", action="store_true", help="only the --async run")
    parser.add_argument(
        "--asgi-load",
        action="store_true",
        help="also gunicorn (4 sync workers, DRF view) against uvicorn (4 workers, adrf view) "
        "under wrk, on PostgreSQL + Redis",
    )
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--no-save", action="store_true", help="do not write results JSON")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.batch = 10, 20

    chosen = None if args.configs is None else [c.strip() for c in args.configs.split(",")]
    chosen = None if chosen is None else [c for c in chosen if c]
    unknown = set(chosen or ()) - set(CONFIGS) - set(ASYNC_CONFIGS)
    if unknown:
        parser.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    only = args.scale_only or args.async_only
    configs = [] if only else [c for c in (chosen or CONFIGS) if c in CONFIGS]
    async_configs = (
        [c for c in (chosen or ASYNC_CONFIGS) if c in ASYNC_CONFIGS]
        if args.async_path or args.async_only
        else []
    )
    services_up = reachable(database_url("x"), 5432) and reachable(redis_url(), 6379)
    if not services_up:
        skipped = [c for c in dict.fromkeys(configs + async_configs) if c != "embedded"]
        if args.scale or args.scale_only:
            skipped.append("scale")
        if args.asgi_load:
            skipped.append("asgi-load")
        if skipped:
            print(
                "PostgreSQL or Redis is not reachable (DATABASE_URL / REDIS_URL): "
                f"skipping {', '.join(skipped)}",
                file=sys.stderr,
            )
        configs = [c for c in configs if c == "embedded"]
        async_configs = [c for c in async_configs if c == "embedded"]

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
        for config in async_configs:
            results.setdefault("async", {})[config] = run_config(
                config, args, module="benchmarks.asyncpath"
            )
        if args.asgi_load and services_up:
            results["asgi_load"] = {
                config: run_config(config, args, module="benchmarks.asyncload")
                for config in ASGI_LOAD_CONFIGS
            }
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
        doc = ROOT / "docs" / "benchmarks.md"
        if results["configs"] or "load" in results or "scale" in results:
            main_text = report.render(results, include_async=False)[0]
            report.write_docs(doc, results, main_text, "results-busy" if args.busy else "results")
        if "async" in results or "asgi_load" in results:
            report.write_docs(doc, results, report.render_async(results)[0], "results-async")
        print("docs/benchmarks.md updated")
    return 1 if any(v["status"] == "FAIL" for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
