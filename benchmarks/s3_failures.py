"""How long the S3 store takes to give up on an endpoint that fails, beside a listing that succeeds.

    .venv/bin/python benchmarks/s3_failures.py                 # MEDR1_S3_MAX_ATTEMPTS 1, 2 and 5
    .venv/bin/python benchmarks/s3_failures.py --attempts 1 3 --repeats 5

Three endpoints, each on loopback, a `list("models/")` timed from the call to its answer or its StoreError:

    answers     moto's S3 server with an empty bucket (the baseline: one round trip)
    refused     a port nothing listens on (connection refused at once)
    hangs up    a server that accepts every connection and closes it before answering

Botocore's standard retry mode waits a random time of up to 2^(try-1) s between tries, so the time
to give up grows with MEDR1_S3_MAX_ATTEMPTS; the median of --repeats runs is printed with the range.
The tests check what can be counted (the tries a failing endpoint gets), not how long they take.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the suite's moto server: one of each

from conftest import MotoServer

from medr1.registry.backends import open_store
from medr1.registry.store import StoreError


def hanging_up_server() -> tuple[socket.socket, str]:
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timed_listing(url: str, endpoint: str, attempts: int) -> tuple[float, str]:
    os.environ.update(MEDR1_S3_ENDPOINT_URL=endpoint, MEDR1_S3_MAX_ATTEMPTS=str(attempts))
    store = open_store(url)
    started = time.perf_counter()
    try:
        store.list("models/")
        outcome = "listed"
    except StoreError:
        outcome = "StoreError"
    return time.perf_counter() - started, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, nargs="+", default=[1, 2, 5], help="MEDR1_S3_MAX_ATTEMPTS values")
    parser.add_argument("--repeats", type=int, default=3, help="timed listings per cell (default 3)")
    arguments = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="benchmark", AWS_SECRET_ACCESS_KEY="benchmark", AWS_DEFAULT_REGION="us-east-1",
                      AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    os.environ.pop("AWS_PROFILE", None)
    server = MotoServer()
    listener, hangs_up = hanging_up_server()
    try:
        bucket = server.new_bucket()
        endpoints = {"answers": (f"s3://{bucket}/p", server.url),
                     "refused": ("s3://bucket/p", f"http://127.0.0.1:{free_port()}"),
                     "hangs up": ("s3://bucket/p", hangs_up)}
        rows = []
        for attempts in arguments.attempts:
            for name, (url, endpoint) in endpoints.items():
                runs = [timed_listing(url, endpoint, attempts) for _ in range(arguments.repeats)]
                seconds = [run[0] for run in runs]
                rows.append((attempts, name, statistics.median(seconds), min(seconds), max(seconds), runs[0][1]))
    finally:
        listener.close()
        server.stop()
    print(f"\nS3 store list() on loopback, {arguments.repeats} runs a cell, {os.cpu_count()} CPUs")
    print(f"{'max attempts':>12}  {'endpoint':<10}{'median s':>10}{'min s':>8}{'max s':>8}  outcome")
    for attempts, name, median, low, high, outcome in rows:
        print(f"{attempts:>12}  {name:<10}{median:>10.3f}{low:>8.3f}{high:>8.3f}  {outcome}")


if __name__ == "__main__":
    main()
