"""Python bytecodes executed per click-to-dial decision: a cost figure that does not move
with the machine's load, for comparing two checkouts of the gate.

    .venv/bin/python bench/dial_cost.py                              # this checkout
    .venv/bin/python bench/dial_cost.py --vs ../old-checkout         # side by side with another

Wall-clock A/B runs on a shared two-core machine spread by more than the difference
between two releases; the count of bytecodes the interpreter executes per decision does
not. (The in-process CPU time of the same calls, untraced, is printed too: it moves
with the load, but includes what runs in C.) It is taken with `sys.settrace` opcode events, after a warm-up, over `--dials`
decisions of 50 collectors on a SQLite database seeded as `gate_bench.py` seeds it
(the same cases, users and prior attempts): once calling `Gate.request_dial` in process,
once through the HTTP app (ASGI, the server's side only). Frames of the test client
(httpx) are left out, and so is library, standard-library and generated code they call. It counts
interpreted work only: time spent inside C (SQLite, hashing, JSON) is the same for the same statements
and is not in it. `--vs PATH` runs this script again under PATH's checkout (its
`.venv` if it has one) and prints both, with the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


def _counting() -> tuple[collections.Counter[str], Any]:
    counts: collections.Counter[str] = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        name = frame.f_code.co_filename
        if _client(name):
            return None  # the test client's side of the exchange
        if _area(name) not in _PROJECT and "/bench/" not in name:
            # Libraries (URL parsing, cookies, a failed import searching every sys.path
            # entry and asking each import hook) working for the client: its side too.
            # A library's frame called by the client itself is the app (FastAPI's __call__).
            caller = frame.f_back
            app = not _neutral(name) and caller is not None and _client(caller.f_code.co_filename)
            while caller is not None and _neutral(caller.f_code.co_filename):
                caller = caller.f_back
            if not app and caller is not None and _client(caller.f_code.co_filename):
                return None
        frame.f_trace_opcodes = True
        key = _area(name)

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[key] += 1
            return local

        return local

    return counts, tracer


_PROJECT = ("policy", "recordings", "dialer", "adapters")


def _client(filename: str) -> bool:
    return "/httpx/" in filename or "/h11/" in filename


def _neutral(filename: str) -> bool:
    """Code that works for whoever calls it: the standard library and generated code."""
    return filename.startswith("<") or (_area(filename) == "stdlib" and "/bench/" not in filename)


def _area(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/")[1].split("/")[0]
    if filename.startswith("<"):
        return "generated (dataclass __init__)"
    for top in _PROJECT:
        if f"/{top}/" in filename:
            return top
    return "stdlib"


async def measure(repo: Path, dials: int, prior: int, clients: int, timed: int) -> dict[str, Any]:
    sys.path.insert(0, str(repo / "bench"))
    sys.path.insert(0, str(repo))
    import gate_bench  # the measured checkout's own seeding
    import httpx

    from dialer.config import load_config
    from dialer.logs import configure_logging
    from dialer.usecases import RequestDial

    try:
        from dialer.bootstrap import open_services
    except ImportError:  # checkouts from before the composition root had its own module
        from dialer.app import open_services  # type: ignore[attr-defined,no-redef]
    from dialer.app import build_app

    out: dict[str, Any] = {"repo": str(repo)}
    with tempfile.TemporaryDirectory(prefix="dialcost-") as d:
        wd = Path(d)
        url = f"sqlite+aiosqlite:///{wd / 'var' / 'dialgate.db'}"
        cfg = wd / "config.toml"
        cfg.write_text(f'[paths]\ndata_dir = "{wd / "var"}"\n[store]\nurl = "{url}"\n'
                       f'[log]\nlevel = "warning"\n[gate]\nauth_cache_s = 300.0\n{gate_bench.POLICY}', encoding="utf-8")
        gate_bench.cli(cfg, "db", "upgrade")
        tokens = await gate_bench.make_users(cfg, [("data-x", "data")] + [(f"agent-{i}", "collector") for i in range(clients)])
        configure_logging("warning")
        n_cases = 1000
        per_agent = [[i for i in range(n_cases) if i % clients == a] for a in range(clients)]
        app = build_app(load_config(cfg))
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gate") as c:
                r = await c.post("/v1/cases:import", json={"cases": gate_bench.cases_doc(n_cases, clients)},
                                 headers={"Authorization": f"Bearer {tokens['data-x']}"})
                assert r.status_code == 200, r.text
                await gate_bench.seed_prior(url, prior)

                async def http_round(per: int, offset: int) -> None:
                    async def worker(w: int) -> None:
                        mine = per_agent[w]
                        for j in range(per):
                            k = mine[(j + offset) % len(mine)]
                            r = await c.post("/v1/dials", json={"case_id": f"K-{k}", "number": f"+86137{k:08d}",
                                                                "agent_id": f"agent-{w}"},
                                             headers={"Authorization": f"Bearer {tokens[f'agent-{w}']}"})
                            assert r.status_code in (201, 403), r.text
                    await asyncio.gather(*(worker(w) for w in range(clients)))

                await http_round(2, 0)
                out["http"] = await _traced(lambda: http_round(max(1, dials // clients), 3), dials)

        async with open_services(load_config(cfg), migrate=False) as svc:
            async with svc.store.read() as uow:
                agents = [await uow.users.by_name(f"agent-{w}") for w in range(clients)]

            async def inproc_round(per: int, offset: int) -> None:
                async def worker(w: int) -> None:
                    mine = per_agent[w]
                    for j in range(per):
                        k = mine[(j + offset) % len(mine)]
                        await svc.gate.request_dial(RequestDial(actor=agents[w], case_id=f"K-{k}",
                                                                number=f"+86137{k:08d}", agent_id=f"agent-{w}"))
                await asyncio.gather(*(worker(w) for w in range(clients)))

            await inproc_round(2, 11)
            out["inproc"] = await _traced(lambda: inproc_round(max(1, dials // clients), 17), dials)
            # The same calls untraced, by this process's CPU clock: SQLite and the C
            # libraries included, which the bytecode count leaves out.
            n = max(1, timed // clients) * clients
            cpu = time.process_time()
            await inproc_round(n // clients, 23)
            out["inproc"]["cpu_us"] = (time.process_time() - cpu) / n * 1e6
    return out


async def _traced(make: Any, dials: int) -> dict[str, Any]:
    counts, tracer = _counting()
    sys.settrace(tracer)
    try:
        await make()
    finally:
        sys.settrace(None)
    n = max(1, dials)
    return {"per_dial": sum(counts.values()) / n, "by_area": {k: v / n for k, v in counts.most_common()}}


def _other(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    py = path / ".venv" / "bin" / "python"
    cmd = [str(py if py.exists() else sys.executable), str(HERE), "--repo", str(path), "--json",
           "--dials", str(args.dials), "--prior", str(args.prior), "--timed", str(args.timed)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=path, env={**os.environ, "PYTHONPATH": str(path)})
    if run.returncode != 0:
        raise SystemExit(f"{path}: {run.stderr.strip()[-800:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=HERE.parents[1], help="checkout to measure (default: this one)")
    ap.add_argument("--vs", type=Path, help="another checkout, measured the same way and printed beside")
    ap.add_argument("--dials", type=int, default=500)
    ap.add_argument("--prior", type=int, default=1000)
    ap.add_argument("--timed", type=int, default=3000, help="untraced in-process decisions timed by CPU clock")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    mine = asyncio.run(measure(args.repo.resolve(), args.dials, args.prior, 50, args.timed))
    if args.json:
        print(json.dumps(mine))
        return
    other = _other(args.vs.resolve(), args) if args.vs else None
    cpu = f"in-process Gate.request_dial, CPU of the process: {mine['inproc']['cpu_us']:,.0f} µs per decision"
    if other:
        ratio = mine["inproc"]["cpu_us"] / other["inproc"]["cpu_us"]
        cpu += f"  |  {args.vs}: {other['inproc']['cpu_us']:,.0f}  (ratio {ratio:.3f})"
    print(cpu)
    for path in ("inproc", "http"):
        label = {"inproc": "in-process Gate.request_dial", "http": "POST /v1/dials, server side (ASGI)"}[path]
        line = f"{label}: {mine[path]['per_dial']:,.0f} bytecodes per decision"
        if other:
            ratio = mine[path]["per_dial"] / other[path]["per_dial"]
            line += f"  |  {args.vs}: {other[path]['per_dial']:,.0f}  (ratio {ratio:.3f})"
        print(line)
        areas = set(mine[path]["by_area"]) | set(other[path]["by_area"] if other else ())
        for area in sorted(areas, key=lambda a: -mine[path]["by_area"].get(a, 0)):
            a = mine[path]["by_area"].get(area, 0)
            b = other[path]["by_area"].get(area, 0) if other else None
            print(f"    {area:32s} {a:8,.0f}" + (f"  {b:8,.0f}  {a - b:+7,.0f}" if b is not None else ""))


if __name__ == "__main__":
    main()
