#!/usr/bin/env python3
"""`make bench`: what a cache hit costs, whether it grows with the cache, and credits spent on a burst.

Everything is measured in this one run, with the runs being compared interleaved, and printed as
ratios: this machine is noisy, so absolute numbers only mean something next to each other.
Talks only to a fake Criminal IP on 127.0.0.1 and a temporary AF_UNIX socket.
"""
import importlib.machinery
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from selftest import KEY, FakeCriminalIP, WazuhHome, alert_for  # noqa: E402  (the test fixtures)

ROUNDS = 25
BIG_CACHE = 100_000


def load_script(path: str):
    """The installed script as a module, to fill a cache through its own Cache class."""
    loader = importlib.machinery.SourceFileLoader('custom_criminalip', path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def timed(command: list, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - started) * 1000


def hit_command(home: WazuhHome, ip: str) -> list:
    alert = home.write('bench.alert', alert_for(ip))
    options = home.write('bench.options', home.options)
    return [sys.executable, home.script, alert, KEY, '', '', options, '10', '3']


def fill(home: WazuhHome, count: int) -> None:
    """count entries written by the script's own cache code (no HTTP)."""
    module = load_script(home.script)
    settings = SimpleNamespace(cache_dir=home.cache_dir, cache_ttl=86400, error_ttl=300,
                               cache_max_entries=10 * count)
    cache = module.Cache(settings, module.Log(os.devnull))
    report = {'score_inbound': 'Low', 'score_outbound': 'Safe', 'as_name': 'BENCH'}
    moment = time.time()
    for n in range(count):
        cache.store(f'46.{n // 62500}.{n // 250 % 250}.{n % 250 + 1}', moment, report=report)


def main() -> int:
    api = FakeCriminalIP()
    small, big, burst = WazuhHome(api), WazuhHome(api), WazuhHome(api)
    try:
        env = dict(os.environ)
        print(f'custom-criminalip bench, Python {sys.version.split()[0]}, {ROUNDS} interleaved rounds')
        for home in (small, big):
            home.run(alert_for('185.220.101.7'))               # the IP every hit asks for
        fill(small, 9)
        print(f'filling a cache with {BIG_CACHE:,} IPs through the cache code ...', flush=True)
        started = time.monotonic()
        fill(big, BIG_CACHE - 1)
        print(f'  done in {time.monotonic() - started:.0f}s')

        bare, hit_small, hit_big = [], [], []
        for _ in range(ROUNDS):
            bare.append(timed([sys.executable, '-c', 'pass'], env))
            hit_small.append(timed(hit_command(small, '185.220.101.7'), env))
            hit_big.append(timed(hit_command(big, '185.220.101.7'), env))
        calls_before = api.calls()
        bare_ms, small_ms, big_ms = (statistics.median(x) for x in (bare, hit_small, hit_big))
        print(f'python3 -c pass         median {bare_ms:7.1f} ms')
        print(f'cache hit, 10 IPs       median {small_ms:7.1f} ms   ratio to bare {small_ms / bare_ms:.2f}x '
              f'(goal < 2x), +{small_ms - bare_ms:.1f} ms')
        print(f'cache hit, {BIG_CACHE:,} IPs  median {big_ms:7.1f} ms   ratio big/small {big_ms / small_ms:.2f} '
              f'(target <= 1.2)')

        ips = [f'185.220.102.{n}' for n in range(1, 21)]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda n: burst.start(alert_for(ips[n % 20])).communicate(), range(1000)))
        burst.settle()
        calls = api.calls() - calls_before
        print(f'burst of 1,000 alerts from 20 IPs: {calls} API calls (target 20), '
              f'{len(burst.received)} events sent, {time.monotonic() - started:.0f}s')
        return 0 if calls == 20 and len(burst.received) == 1000 else 1
    finally:
        for home in (small, big, burst):
            home.close()
        api.close()


if __name__ == '__main__':
    sys.exit(main())
