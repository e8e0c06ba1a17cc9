#!/usr/bin/env python3
"""`make check`: run selftest.py under every CPython 3.8-3.13 on this machine (pyenv or PATH).

Fails when any run fails or when no interpreter was found. Two suites run at a time.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINORS = range(8, 14)


def version_of(python: str):
    try:
        done = subprocess.run([python, '-c', 'import sys; print("%d.%d.%d" % sys.version_info[:3])'],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_pythons() -> list:
    """[(version, path)], one per minor version, the newest patch release first found."""
    pyenv_root = os.environ.get('PYENV_ROOT') or os.path.expanduser('~/.pyenv')
    found = {}
    for minor in MINORS:
        candidates = sorted(glob.glob(os.path.join(pyenv_root, 'versions', f'3.{minor}.*', 'bin', 'python3')),
                            key=lambda path: [int(n) for n in re.findall(r'\d+', path.split('versions')[-1])],
                            reverse=True)
        candidates += [shutil.which(f'python3.{minor}') or '', sys.executable, shutil.which('python3') or '']
        for path in filter(None, candidates):
            version = version_of(path)
            if version and version.startswith(f'3.{minor}.'):
                found[minor] = (version, path)
                break
    return [found[minor] for minor in sorted(found)]


def run_suite(python: tuple) -> tuple:
    version, path = python
    started = time.monotonic()
    done = subprocess.run([path, os.path.join(REPO, 'selftest.py')], cwd=REPO, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ran = re.search(r'^Ran (\d+) tests?', done.stdout, re.MULTILINE)
    failed = sum(int(n) for n in re.findall(r'(?:failures|errors)=(\d+)', done.stdout.splitlines()[-1]
                                             if done.stdout.strip() else ''))
    skipped = re.search(r'skipped=(\d+)', done.stdout.splitlines()[-1] if done.stdout.strip() else '')
    total = int(ran.group(1)) if ran else 0
    if done.returncode != 0 and failed == 0:
        failed = max(1, total)
    return (version, done.returncode, total, failed, int(skipped.group(1)) if skipped else 0,
            time.monotonic() - started, done.stdout)


def main() -> int:
    pythons = find_pythons()
    if not pythons:
        print('make check: no CPython 3.8-3.13 found (install one, e.g. with pyenv)')
        return 1
    print('make check: running selftest.py under ' + ', '.join(f'Python {v}' for v, _ in pythons))
    passed = failed = skipped = 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        for version, code, total, bad, skips, seconds, output in pool.map(run_suite, pythons):
            status = 'ok' if code == 0 else 'FAILED'
            print(f'  Python {version}: {status}, {total} tests, {bad} failed, {skips} skipped, {seconds:.0f}s',
                  flush=True)
            if code != 0:
                print('\n'.join('    | ' + line for line in output.splitlines()[-60:]))
            passed += total - bad - skips
            failed += bad
            skipped += skips
    print(f'check: {passed} passed, {failed} failed, {skipped} skipped')
    return 0 if failed == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
