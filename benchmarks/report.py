"""Tables and PASS/FAIL lines from the results of ``python -m benchmarks``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ORDER = (
    "baseline",
    "ours_token_warm",
    "ours_token_cold",
    "ours_jwt_warm",
    "drf_token",
    "knox",
    "simplejwt",
    "simplejwt_stateless",
    "cache_get_in_view",
    "cache_get",
    "redis_py_get",
)
CONFIG_TITLES = {
    "embedded": "SQLite + LocMemCache (embedded default)",
    "redis": "PostgreSQL + Redis, Django's RedisCache",
    "django-redis": "PostgreSQL + Redis, django-redis",
    "native": "PostgreSQL + Redis, the native store (REDIS) with tracked copies",
    "native-cluster": "PostgreSQL + a 3-master Redis Cluster, the native store with tracked copies",
}
ASYNC_TITLES = {
    **CONFIG_TITLES,
    "native": "PostgreSQL + Redis, native store, LOCAL_CACHE on",
    "native-uncopied": "PostgreSQL + Redis, native store, LOCAL_CACHE off",
}
TARGET_CONFIGS = ("redis", "django-redis")
NATIVE_CONFIGS = ("native", "native-cluster")


def _us(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def requests_table(result: dict[str, Any]) -> str:
    rows = result["requests"]
    floor = rows["cache_get"]["median_us"]
    lines = [
        "| scheme | median µs / request | overhead µs | overhead ÷ bare cache.get "
        "| DB queries | cache reads | cache writes | cache round trips |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ORDER:
        row = rows.get(name)
        if row is None:
            continue
        overhead = row.get("overhead_us")
        cache = row["cache"]
        lines.append(
            f"| {row['label']} | {_us(row['median_us'])} "
            f"| {'' if overhead is None or name == 'baseline' else _us(overhead)} "
            f"| {'' if overhead is None or name == 'baseline' else f'{overhead / floor:.2f}'} "
            f"| {row['db_queries']} | {cache['reads']} | {cache['writes']} "
            f"| {cache['round_trips']} |"
        )
    return "\n".join(lines)


def other_table(result: dict[str, Any]) -> str:
    lines = [
        "| what | median µs | DB queries | cache reads / writes |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, row in result["login"].items():
        label = {
            "login_token": "login (`POST login/`)",
            "login_jwt": "login (`POST token/`, JWT pair)",
        }[name]
        lines.append(
            f"| {label} | {_us(row['median_us'])} | {row['db_queries']} "
            f"| {row['cache']['reads']} / {row['cache']['writes']} |"
        )
    listing = result["listing"]
    for n in (2, 20, 200):
        row = listing[f"active_{n}"]
        lines.append(
            f"| `GET active/`, {n} sessions ({_us(row['per_session_us'])} µs per listed session, "
            f"{row['ua_parses']} user-agent parses) | {_us(row['median_us'])} "
            f"| {row['db_queries']} "
            f"| {row['cache']['reads']} / {row['cache']['writes']} |"
        )
    marginal = listing["marginal_us_per_session"]
    entry = result["entry"]
    stored = f", {entry['stored_bytes']} bytes in Redis" if "stored_bytes" in entry else ""
    lines.append("")
    lines.append(
        f"Each further listed session costs {_us(marginal['2_to_20'])} µs (2→20) and "
        f"{_us(marginal['20_to_200'])} µs (20→200). The cached entry of a session is "
        f"{entry['pickled_bytes']} bytes pickled{stored} (user agent of "
        f"{entry['user_agent_chars']} characters included)."
    )
    return "\n".join(lines)


def _verdict(verdicts: list, config: str, name: str, ok: bool, detail: str) -> str:
    status = "PASS" if ok else "FAIL"
    verdicts.append({"config": config, "target": name, "status": status, "detail": detail})
    return f"{status}  [{config}] {name}: {detail}"


def targets(config: str, result: dict[str, Any], verdicts: list) -> list[str]:
    r = result["requests"]
    over = {name: row.get("overhead_us") for name, row in r.items()}
    get = r["cache_get"]["median_us"]
    in_view = over["cache_get_in_view"]
    warm, jwt, cold = r["ours_token_warm"], r["ours_jwt_warm"], r["ours_token_cold"]
    lines = [
        _verdict(
            verdicts,
            config,
            "opaque warm ≤ 0.35 x DRF TokenAuthentication overhead",
            over["ours_token_warm"] <= 0.35 * over["drf_token"],
            f"{_us(over['ours_token_warm'])} µs vs {_us(0.35 * over['drf_token'])} µs "
            f"(ratio {over['ours_token_warm'] / over['drf_token']:.2f})",
        ),
        _verdict(
            verdicts,
            config,
            "opaque warm ≤ 0.25 x knox overhead",
            over["ours_token_warm"] <= 0.25 * over["knox"],
            f"{_us(over['ours_token_warm'])} µs vs {_us(0.25 * over['knox'])} µs "
            f"(ratio {over['ours_token_warm'] / over['knox']:.2f})",
        ),
        _verdict(
            verdicts,
            config,
            "opaque warm ≤ 1.5 x one bare cache.get",
            over["ours_token_warm"] <= 1.5 * get,
            f"{_us(over['ours_token_warm'])} µs vs {_us(1.5 * get)} µs "
            f"(ratio {over['ours_token_warm'] / get:.2f})",
        ),
        _verdict(
            verdicts,
            config,
            "(same, against one cache.get made inside a request) opaque warm ≤ 1.5 x",
            over["ours_token_warm"] <= 1.5 * over["cache_get_in_view"],
            f"{_us(over['ours_token_warm'])} µs vs {_us(1.5 * over['cache_get_in_view'])} µs "
            f"(ratio {over['ours_token_warm'] / over['cache_get_in_view']:.2f})",
        ),
        _verdict(
            verdicts,
            config,
            "opaque warm: 0 DB queries, 1 cache round trip, 0 cache writes",
            warm["db_queries"] == 0
            and warm["cache"]["round_trips"] == 1
            and warm["cache"]["writes"] == 0,
            f"{warm['db_queries']} queries, {warm['cache']['round_trips']} round trip(s) "
            f"{warm['cache']['commands']}, {warm['cache']['writes']} writes",
        ),
        _verdict(
            verdicts,
            config,
            "JWT warm ≤ simplejwt stateless overhead + 1.5 x bare cache.get",
            over["ours_jwt_warm"] <= over["simplejwt_stateless"] + 1.5 * get,
            f"{_us(over['ours_jwt_warm'])} µs vs {_us(over['simplejwt_stateless'] + 1.5 * get)} µs "
            f"(beyond stateless: {(over['ours_jwt_warm'] - over['simplejwt_stateless']) / get:.2f} "
            "x cache.get)",
        ),
        _verdict(
            verdicts,
            config,
            "(same, against one cache.get made inside a request) JWT warm ≤ stateless + 1.5 x",
            over["ours_jwt_warm"] <= over["simplejwt_stateless"] + 1.5 * over["cache_get_in_view"],
            f"{_us(over['ours_jwt_warm'])} µs vs "
            f"{_us(over['simplejwt_stateless'] + 1.5 * over['cache_get_in_view'])} µs "
            f"(beyond stateless: "
            f"{(over['ours_jwt_warm'] - over['simplejwt_stateless']) / in_view:.2f}"
            " x that cache.get)",
        ),
        _verdict(
            verdicts,
            config,
            "JWT warm: 0 DB queries",
            jwt["db_queries"] == 0,
            f"{jwt['db_queries']} queries, {jwt['cache']['round_trips']} round trip(s)",
        ),
        _verdict(
            verdicts,
            config,
            "opaque cold: 1 DB query, 1 cache write",
            cold["db_queries"] == 1 and cold["cache"]["writes"] == 1,
            f"{cold['db_queries']} queries, {cold['cache']['writes']} writes "
            f"{cold['cache']['commands']}",
        ),
    ]
    for name, row in result["login"].items():
        lines.append(
            _verdict(
                verdicts,
                config,
                f"{name.replace('_', ' ')}: ≤ 3 DB queries",
                row["db_queries"] <= 3,
                f"{row['db_queries']} queries",
            )
        )
    listing = result["listing"]
    q = {n: listing[f"active_{n}"]["db_queries"] for n in (2, 20, 200)}
    lines.append(
        _verdict(
            verdicts,
            config,
            "GET active/: same queries at 200 sessions as at 2 (≤ 3)",
            q[200] == q[2] <= 3,
            f"{q[2]} / {q[20]} / {q[200]} queries at 2 / 20 / 200 sessions",
        )
    )
    marginal = listing["marginal_us_per_session"]
    parses = sum(listing[f"active_{n}"]["ua_parses"] for n in (2, 20, 200))
    lines.append(
        _verdict(
            verdicts,
            config,
            "GET active/: user agents parsed once, time per listed session flat",
            parses == 0 and marginal["20_to_200"] <= 1.5 * marginal["2_to_20"],
            f"{parses} parses on a repeated listing; µs per listed session "
            + " / ".join(_us(listing[f"active_{n}"]["per_session_us"]) for n in (2, 20, 200))
            + f" at 2 / 20 / 200; each further one {_us(marginal['2_to_20'])} µs (2→20), "
            f"{_us(marginal['20_to_200'])} µs (20→200)",
        )
    )
    size = result["entry"]["pickled_bytes"]
    lines.append(
        _verdict(verdicts, config, "cached entry ≤ 300 bytes", size <= 300, f"{size} bytes pickled")
    )
    return lines


def native_targets(config: str, result: dict[str, Any], verdicts: list) -> list[str]:
    """The zero-round-trip targets: the native store with copies, against stateless JWTs."""
    r = result["requests"]
    over = {name: row.get("overhead_us") for name, row in r.items()}
    stateless, drf = over["simplejwt_stateless"], over["drf_token"]
    warm, jwt = r["ours_token_warm"], r["ours_jwt_warm"]
    wire = {name: row["cache"].get("wire_sends", 0) for name, row in (("t", warm), ("j", jwt))}
    return [
        _verdict(
            verdicts,
            config,
            "opaque warm ≤ 1.2 x simplejwt stateless overhead",
            over["ours_token_warm"] <= 1.2 * stateless,
            f"{_us(over['ours_token_warm'])} µs vs {_us(1.2 * stateless)} µs "
            f"(ratio {over['ours_token_warm'] / stateless:.2f})",
        ),
        _verdict(
            verdicts,
            config,
            "opaque warm ≤ 0.15 x DRF TokenAuthentication overhead",
            over["ours_token_warm"] <= 0.15 * drf,
            f"{_us(over['ours_token_warm'])} µs vs {_us(0.15 * drf)} µs "
            f"(ratio {over['ours_token_warm'] / drf:.2f})",
        ),
        _verdict(
            verdicts,
            config,
            "opaque warm: 0 DB queries, 0 network round trips, 0 writes",
            warm["db_queries"] == 0 and wire["t"] == 0 and warm["cache"]["writes"] == 0,
            f"{warm['db_queries']} queries, {wire['t']} sends on any Redis connection "
            f"({warm['cache'].get('pings', 0)} lease PINGs, not waited for)",
        ),
        _verdict(
            verdicts,
            config,
            "JWT warm ≤ 1.3 x simplejwt stateless overhead",
            over["ours_jwt_warm"] <= 1.3 * stateless,
            f"{_us(over['ours_jwt_warm'])} µs vs {_us(1.3 * stateless)} µs "
            f"(ratio {over['ours_jwt_warm'] / stateless:.2f})",
        ),
        _verdict(
            verdicts,
            config,
            "JWT warm: 0 DB queries, 0 network round trips",
            jwt["db_queries"] == 0 and wire["j"] == 0,
            f"{jwt['db_queries']} queries, {wire['j']} sends",
        ),
    ]


def load_section(load: dict[str, Any], verdicts: list) -> tuple[str, list[str]]:
    lines = [
        "| scheme | requests/s | p50 ms | p99 ms | non-2xx |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in load["schemes"].values():
        lines.append(
            f"| {row['label']} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['non_2xx']} |"
        )
    rows = load["schemes"]
    ours, drf, stateless = rows["ours_token_warm"], rows["drf_token"], rows["simplejwt_stateless"]
    verdicts_lines = [
        _verdict(
            verdicts,
            "load",
            "4 workers: opaque warm (native store) serves ≥ DRF TokenAuthentication's requests/s",
            ours["rps"] >= drf["rps"],
            f"{ours['rps']:,.0f} vs {drf['rps']:,.0f} requests/s "
            f"(stateless simplejwt {stateless['rps']:,.0f}; ratio to it "
            f"{ours['rps'] / stateless['rps']:.2f})",
        ),
        _verdict(
            verdicts,
            "load",
            "4 workers: every answer 2xx",
            all(row["non_2xx"] == 0 for row in rows.values()),
            ", ".join(f"{name} {row['non_2xx']}" for name, row in rows.items()),
        ),
    ]
    note = (
        f"{load['tool']}, {load['connections']} connections, {load['seconds']} s per scheme, "
        f"gunicorn {load['workers']} sync workers, PostgreSQL + Redis (native store)."
    )
    return note + "\n\n" + "\n".join(lines), verdicts_lines


def scale_section(scale: dict[str, Any], verdicts: list) -> tuple[str, list[str]]:
    small, large, cleanup = scale["small"], scale["large"], scale["cleanup"]
    table = "\n".join(
        [
            "| | at " + f"{small['rows']:,} rows | at {large['rows']:,} rows | ratio |",
            "| --- | ---: | ---: | ---: |",
            f"| cold-path authentication, µs / request | {_us(small['cold_us'])} "
            f"| {_us(large['cold_us'])} | {large['cold_us'] / small['cold_us']:.2f} |",
            f"| `GET active/` (2 sessions), µs / request | {_us(small['active_us'])} "
            f"| {_us(large['active_us'])} | {large['active_us'] / small['active_us']:.2f} |",
            "",
            f"Bulk load of {scale['loaded_rows']:,} rows: {scale['load_seconds']:.1f} s. "
            f"`manage.py nilva_session_cleanup` deleted {cleanup['deleted']:,} expired rows in "
            f"{cleanup['batches']} batches of {cleanup['batch_size']:,}: "
            f"{cleanup['total_seconds']:.1f} s "
            f"in all; longest DELETE {cleanup['longest_ms']:.0f} ms, longest batch including its "
            f"SELECT of ids {cleanup['longest_batch_ms']:.0f} ms.",
        ]
    )
    lines = [
        _verdict(
            verdicts,
            "scale",
            "cold-path authentication at 1M rows ≤ 1.5 x at 1k rows",
            large["cold_us"] <= 1.5 * small["cold_us"],
            f"{_us(large['cold_us'])} µs vs {_us(small['cold_us'])} µs",
        ),
        _verdict(
            verdicts,
            "scale",
            "GET active/ unaffected by other users' rows (≤ 1.5 x)",
            large["active_us"] <= 1.5 * small["active_us"],
            f"{_us(large['active_us'])} µs vs {_us(small['active_us'])} µs",
        ),
        _verdict(
            verdicts,
            "scale",
            "cleanup: longest single batch < 1 s",
            cleanup["longest_batch_ms"] < 1000,
            f"longest batch {cleanup['longest_batch_ms']:.0f} ms (DELETE alone "
            f"{cleanup['longest_ms']:.0f} ms), {cleanup['deleted']:,} rows in "
            f"{cleanup['total_seconds']:.1f} s",
        ),
    ]
    return table, lines


def environment(results: dict[str, Any]) -> str:
    m = results["machine"]
    runs = [*results["configs"].values(), *results.get("async", {}).values()]
    first = next(iter(runs), None) or results.get("scale", {})
    versions = first.get("versions", {})
    servers = sorted(
        {
            v
            for r in [*runs, results.get("scale", {})]
            for v in (r.get("database_version"), r.get("redis_version"))
            if v
        }
    )
    load = m.get("load_average_at_start")
    end = m.get("load_average_at_end")
    return "\n".join(
        [
            f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} memory, Linux {m['kernel']}"
            + (f"; load average (1 min) {load[0]:.2f} at start" if load else "")
            + (f", {end[0]:.2f} at the end" if end else ""),
            "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
            "- Servers: " + (", ".join(servers) or "none"),
            f"- Date: {results['date']}, nilva-session revision {results['revision']}",
            f"- Command: `{results['command'].strip()}`"
            + (" (one CPU-bound process spinning meanwhile)" if results.get("busy") else ""),
        ]
    )


def _n(value: float) -> str:
    """A count per operation: whole numbers as such, else two decimals."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


ASYNC_COLUMNS = {
    "embedded": "SQLite + LocMem",
    "redis": "PG + RedisCache",
    "django-redis": "PG + django-redis",
    "native": "PG + native store, copies",
    "native-uncopied": "PG + native store, no copies",
}


def _transposed(runs: dict[str, Any], rows: list[tuple[str, Any]]) -> str:
    """A table with one column per configuration; ``rows``: (label, run's schemes -> cell)."""
    lines = [
        "| | " + " | ".join(ASYNC_COLUMNS[c] for c in runs) + " |",
        "| --- |" + " ---: |" * len(runs),
    ]
    for label, cell in rows:
        lines.append(f"| {label} | " + " | ".join(cell(r["schemes"]) for r in runs.values()) + " |")
    return "\n".join(lines)


def async_core_table(runs: dict[str, Any]) -> str:
    def median(name: str) -> Any:
        return lambda r: _us(r[name]["median_us"])

    def ratio(a: str, s: str) -> Any:
        return lambda r: f"{r[a]['median_us'] / r[s]['median_us']:.2f}"

    def count(key: str, *names: str) -> Any:
        return lambda r: " / ".join(_n(r[name][key]) for name in names)

    return _transposed(
        runs,
        [
            ("opaque token: `sessions.authenticate_token`, µs", median("core_token_sync")),
            ("opaque token: `await aio.aauthenticate_token`, µs", median("core_token_async")),
            ("**async ÷ sync**", ratio("core_token_async", "core_token_sync")),
            ("JWT: `sessions.authenticate_session_id`, µs", median("core_jwt_sync")),
            ("JWT: `await aio.aauthenticate_session_id`, µs", median("core_jwt_async")),
            ("**async ÷ sync**", ratio("core_jwt_async", "core_jwt_sync")),
            (
                "worker-thread hops per async call (token / JWT)",
                count("thread_hops", "core_token_async", "core_jwt_async"),
            ),
            (
                "of them `sync_to_async` in `aio` (token / JWT)",
                count("aio_hops", "core_token_async", "core_jwt_async"),
            ),
            (
                "DB queries per call (sync / async)",
                count("db_queries", "core_token_sync", "core_token_async"),
            ),
            (
                "Redis commands per token call (sync / async)",
                count("redis_sends", "core_token_sync", "core_token_async"),
            ),
            (
                "Redis connections opened per call, any core row",
                lambda r: _n(max(r[n]["redis_connects"] for n in r if n.startswith("core_"))),
            ),
        ],
    )


def async_view_table(runs: dict[str, Any]) -> str:
    def median(name: str) -> Any:
        return lambda r: _us(r[name]["median_us"])

    def overhead(name: str) -> Any:
        return lambda r: _us(r[name]["overhead_us"])

    def ratio(a: str, s: str) -> Any:
        return lambda r: f"{r[a]['overhead_us'] / r[s]['overhead_us']:.2f}"

    def count(key: str, *names: str) -> Any:
        return lambda r: " / ".join(_n(r[name][key]) for name in names)

    views = ("asgi_base", "asgi_token", "asgi_jwt", "asgi_adrf_sync_class", "asgi_sync_token")
    return _transposed(
        runs,
        [
            ("WSGI, DRF view without authentication, µs", median("wsgi_base")),
            ("+ `UserSessionDBTokenAuthentication`", overhead("wsgi_token")),
            ("+ `UserSessionDBJwtAuthentication`", overhead("wsgi_jwt")),
            ("ASGI, adrf view without authentication, µs", median("asgi_base")),
            ("+ `AsyncTokenAuthentication`", overhead("asgi_token")),
            ("+ `AsyncJWTAuthentication`", overhead("asgi_jwt")),
            ("**adrf ÷ DRF, token**", ratio("asgi_token", "wsgi_token")),
            ("**adrf ÷ DRF, JWT**", ratio("asgi_jwt", "wsgi_jwt")),
            ("adrf view + the sync token class", overhead("asgi_adrf_sync_class")),
            ("ASGI, DRF (sync) view + the sync token class", overhead("asgi_sync_token")),
            (
                "ASGI: thread hops per request (the five ASGI rows above)",
                count("thread_hops", *views),
            ),
            ("ASGI: `async_to_sync` per request (same rows)", count("loop_reentries", *views)),
            (
                "ASGI: Redis connections opened per request (same rows)",
                count("redis_connects", *views),
            ),
            (
                "WSGI: Redis connections opened per request (no auth / token / JWT)",
                count("redis_connects", "wsgi_base", "wsgi_token", "wsgi_jwt"),
            ),
            (
                "DB queries per request, any row",
                lambda r: _n(max(x["db_queries"] for x in r.values())),
            ),
            (
                "counts made over warm operations per row (cold ones left out, all rows)",
                lambda r: (
                    f"{next(iter(r.values()))['counted']} "
                    f"({sum(x.get('cold_left_out', 0) for x in r.values())})"
                ),
            ),
        ],
    )


def async_targets(config: str, run: dict[str, Any], verdicts: list) -> list[str]:
    r = run["schemes"]
    core = [r["core_token_async"], r["core_jwt_async"]]
    base_hops = r["asgi_base"]["thread_hops"]
    views = [r["asgi_token"], r["asgi_jwt"]]
    ok = all(x["thread_hops"] == 0 and x["db_queries"] == 0 for x in core) and all(
        x["thread_hops"] == base_hops and x["db_queries"] == 0 for x in views
    )
    return [
        _verdict(
            verdicts,
            f"async {config}",
            "async warm path: 0 DB queries, 0 worker-thread hops (aio; adrf view beyond the "
            "handler's own)",
            ok,
            f"aio token / JWT {_n(core[0]['thread_hops'])} / {_n(core[1]['thread_hops'])} hops "
            f"(of them sync_to_async in aio {_n(core[0]['aio_hops'])} / "
            f"{_n(core[1]['aio_hops'])}), {_n(core[0]['db_queries'])} / "
            f"{_n(core[1]['db_queries'])} queries; adrf token / JWT "
            f"{_n(views[0]['thread_hops'])} / {_n(views[1]['thread_hops'])} hops, ASGI without "
            f"authentication {_n(base_hops)}",
        )
    ]


def asgi_load_section(loads: dict[str, Any], verdicts: list) -> tuple[str, list[str]]:
    lines = [
        "| configuration | server and view | requests/s | p50 ms | p99 ms | non-2xx |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for config, load in loads.items():
        for row in load["schemes"].values():
            lines.append(
                f"| {ASYNC_TITLES[config]} | {row['label']} | {row['rps']:,.0f} "
                f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['non_2xx']} |"
            )
    first = next(iter(loads.values()))
    note = (
        f"{first['tool']}, {first['connections']} connections, {first['seconds']} s per scheme "
        f"(the better of two passes); {first['servers']}."
    )
    rows = [row for load in loads.values() for row in load["schemes"].values()]
    line = _verdict(
        verdicts,
        "asgi-load",
        "gunicorn and uvicorn: every answer 2xx",
        all(row["non_2xx"] == 0 for row in rows),
        f"{sum(row['non_2xx'] for row in rows)} non-2xx answers in {len(rows)} wrk runs",
    )
    return note + "\n\n" + "\n".join(lines), [line]


def async_parts(results: dict[str, Any], verdicts: list) -> tuple[list[str], list[str]]:
    """Return the Markdown parts of the --async / --asgi-load runs, and their target lines."""
    parts: list[str] = []
    target_lines: list[str] = []
    runs = results.get("async", {})
    if runs:
        first = next(iter(runs.values()))
        parts += [
            "### Async warm path: the core, in process",
            "",
            f"Median µs per call of {first['rounds'] * first['batch']:,} calls per scheme "
            f"({first['rounds']} interleaved rounds of {first['batch']}); async calls awaited "
            f"back to back in one running event loop ({first['loop']}).",
            "",
            async_core_table(runs),
            "",
            "### Async warm path: through a view",
            "",
            "Median µs per request of the view without authentication, and what each "
            "authentication class adds to it (*+*: the row's median minus that handler's "
            "no-authentication median, from the same interleaved rounds). WSGI: `WSGIHandler`, "
            "DRF view. ASGI: `ASGIHandler` awaited in the same event loop, adrf view (last "
            "row: the DRF sync view, which Django runs in a worker thread).",
            "",
            async_view_table(runs),
            "",
        ]
        for config, run in runs.items():
            target_lines += async_targets(config, run, verdicts)
    if "asgi_load" in results:
        table, lines = asgi_load_section(results["asgi_load"], verdicts)
        parts += ["### gunicorn (DRF view) and uvicorn (adrf view) under load", "", table, ""]
        target_lines += lines
    return parts, target_lines


def render_async(results: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """Return the --async / --asgi-load block of docs/benchmarks.md, and its verdicts."""
    verdicts: list[dict[str, str]] = []
    parts, target_lines = async_parts(results, verdicts)
    parts = [environment(results), "", *parts]
    if target_lines:
        parts += ["### PASS / FAIL", "", "```", *target_lines, "```", ""]
    return "\n".join(parts), verdicts


def render(results: dict[str, Any], include_async: bool = True) -> tuple[str, list[dict[str, str]]]:
    verdicts: list[dict[str, str]] = []
    parts = [environment(results), ""]
    target_lines: list[str] = []
    for config, result in results["configs"].items():
        if "requests" not in result:
            continue
        parts += [
            f"### {CONFIG_TITLES[config]}",
            "",
            f"Median of {result['rounds'] * result['batch']:,} requests per scheme "
            f"({result['rounds']} interleaved rounds of {result['batch']}); overhead = median - "
            f"the no-authentication baseline ({_us(result['baseline_us'])} µs).",
            "",
            requests_table(result),
            "",
            other_table(result),
            "",
        ]
        if config in TARGET_CONFIGS:
            target_lines += targets(config, result, verdicts)
        if config in NATIVE_CONFIGS:
            target_lines += native_targets(config, result, verdicts)
    if "load" in results:
        table, lines = load_section(results["load"], verdicts)
        parts += ["### 4 gunicorn workers under load", "", table, ""]
        target_lines += lines
    if "scale" in results:
        table, lines = scale_section(results["scale"], verdicts)
        parts += ["### Scale: PostgreSQL with 1,000,000 session rows", "", table, ""]
        target_lines += lines
    if include_async:
        more, lines = async_parts(results, verdicts)
        parts += more
        target_lines += lines
    if target_lines:
        parts += ["### PASS / FAIL", "", "```", *target_lines, "```", ""]
    return "\n".join(parts), verdicts


def write_docs(path: Path, results: dict[str, Any], text: str, name: str = "results") -> None:
    """Replace the generated block ``name`` of docs/benchmarks.md (between its markers)."""
    flag = {"results-busy": " --busy", "results-async": " --async-only"}.get(name, "")
    start = f"<!-- {name}:start (written by `bash benchmarks/run{flag} --write-docs`) -->"
    end = f"<!-- {name}:end -->"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n\n{text.rstrip()}\n\n{end}"
    pattern = re.compile(re.escape(f"<!-- {name}:start") + r".*?" + re.escape(end), re.S)
    if not pattern.search(doc):
        doc = doc.rstrip() + "\n\n" + block + "\n"
    else:
        doc = pattern.sub(lambda _m: block, doc)
    path.write_text(doc)
