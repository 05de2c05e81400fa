#!/usr/bin/env python3
"""Object-store benchmark: the same streaming upload and read through each backend of
contract/store.py (MinIO, Azurite, fake-gcs-server on the local stack), with throughput and the
peak RSS of the process doing it. Not part of `make test`; numbers go to docs/performance.md.

Each backend runs in its own child process so the peak RSS (VmHWM) counts only its SDK and its
buffers. The data is incompressible and produced in 1 MiB writes, as the agent's zstd output is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "operator"))


def child(backend: str, mib: int) -> dict[str, float]:
    import hashlib

    from mysql_backup_operator.contract import config as cc
    from mysql_backup_operator.contract.store import open_store

    from tests.e2e import backends
    from tests.stackenv import start_stack

    stack, _ = start_stack()
    bucket = f"bench-{os.urandom(3).hex()}"
    env: dict[str, str] = {}
    if backend == "s3":
        import boto3

        s3 = stack.s3
        boto3.client(
            "s3", endpoint_url=s3["endpoint"], aws_access_key_id=s3["access_key"],
            aws_secret_access_key=s3["secret_key"], region_name=s3["region"],
        ).create_bucket(Bucket=bucket)  # fmt: skip
        raw = {"bucket": bucket, "endpoint": s3["endpoint"], "forcePathStyle": True}
        env = {cc.ENV_ACCESS_KEY_ID: s3["access_key"], cc.ENV_SECRET_ACCESS_KEY: s3["secret_key"]}
    else:
        backends.create_bucket(stack, backend, bucket)
        if backend == backends.AZURE:
            raw = {"backend": backend, "bucket": bucket}
            env = {cc.ENV_AZURE_CONNECTION_STRING: backends.azure_connection_string(stack)}
        else:
            raw = {"backend": backend, "bucket": bucket, "endpoint": stack.raw["gcs"]["endpoint"]}
    store = open_store(cc.load({cc.ENV_CONFIG: json.dumps({"storage": raw}), **env}).storage)
    block = os.urandom(1024 * 1024)
    t0 = time.monotonic()
    w = store.writer("bench/dump.sql.zst")
    for i in range(mib):
        w.write(block[i % 7 :] + block[: i % 7])
    w.complete()
    t_up = time.monotonic() - t0
    sha = hashlib.sha256()
    t0 = time.monotonic()
    n = 0
    for chunk in store.iter("bench/dump.sql.zst"):
        sha.update(chunk)
        n += len(chunk)
    t_down = time.monotonic() - t0
    assert n == mib * 1024 * 1024
    hwm = next(int(x.split()[1]) for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM"))
    return {"upload_MiB_s": mib / t_up, "read_MiB_s": mib / t_down, "peak_rss_MiB": hwm / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.mib)))
        return
    print(f"| backend | upload MiB/s | streaming read + sha256 MiB/s | peak RSS MiB ({args.mib} MiB object) |")
    print("|---|---|---|---|")
    for backend in ("s3", "azureBlob", "gcs"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", backend, "--mib", str(args.mib)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {backend} | {r['upload_MiB_s']:.0f} | {r['read_MiB_s']:.0f} | {r['peak_rss_MiB']:.0f} |")


if __name__ == "__main__":
    main()
