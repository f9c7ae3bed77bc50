"""The Open Inference Protocol (v2) against TF Serving's REST API (v1) on one `mlcli serve`.

One server (`python -m mlcli serve RUN`, as shipped, access log on, to a file), one row per
request (rows of examples/adult/adult.test), three request forms of the same rows:

- v1: `POST /v1/models/bench:predict` with `{"instances": [row]}`;
- v2 JSON: `POST /v2/models/bench/infer`, one JSON input tensor per column;
- v2 binary: the same with every input and output as binary tensor data (what tritonclient
  sends by default), the `Inference-Header-Content-Length` header giving the JSON's length.

Each form gets 50 warm-up requests, then `--requests` (2,000) at concurrency 1 and as many at
`--concurrency` (32), with serve_bench.py's small keep-alive HTTP/1.1 client; the forms take
turns, and the whole round runs `--rounds` times (the figures are the medians of the rounds'
p50 and p99), so that a burst of load from elsewhere does not land on one form only.

Usage:

    python -m mlcli train examples/adult/config.yaml --quiet
    python benchmarks/v2_bench.py --run runs/adult-income/latest [--json figures.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serve_bench import ADULT_TEST, NAME, free_port, load_rows, run_load, start_server

FORMS = ("v1", "v2 JSON", "v2 binary")
NUMPY = {"FP32": np.float32, "INT64": np.int64}


def v2_binary_body(row: dict[str, Any], inputs: list[dict[str, Any]]) -> tuple[bytes, int]:
    """One row as binary input tensors after the JSON, every output asked for as binary."""
    tensors, blobs = [], []
    for tensor in inputs:
        value = row[tensor["name"]]
        if tensor["datatype"] == "BYTES":
            text = ("" if value is None else str(value)).encode()
            blob = struct.pack("<I", len(text)) + text
        else:
            missing = np.nan if tensor["datatype"] == "FP32" else 0
            blob = np.array([missing if value is None else value], NUMPY[tensor["datatype"]])
            blob = blob.astype(blob.dtype.newbyteorder("<")).tobytes()
        tensors.append(
            {
                "name": tensor["name"],
                "datatype": tensor["datatype"],
                "shape": [1],
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header = json.dumps(
        {"inputs": tensors, "parameters": {"binary_data_output": True}}, separators=(",", ":")
    ).encode()
    return header + b"".join(blobs), len(header)


def v2_json_body(row: dict[str, Any], inputs: list[dict[str, Any]]) -> bytes:
    tensors = [
        {"name": t["name"], "datatype": t["datatype"], "shape": [1], "data": [row[t["name"]]]}
        for t in inputs
    ]
    return json.dumps({"inputs": tensors}, separators=(",", ":")).encode()


def raw(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def requests_of(port: int, rows: list[dict[str, Any]]) -> dict[str, list[bytes]]:
    """The prepared requests of each form, one row each."""
    metadata = httpx.get(f"http://127.0.0.1:{port}/v2/models/{NAME}", timeout=30).json()
    inputs = metadata["inputs"]
    forms: dict[str, list[bytes]] = {form: [] for form in FORMS}
    for row in rows:
        forms["v1"].append(
            raw(port, f"/v1/models/{NAME}:predict", json.dumps({"instances": [row]}).encode())
        )
        forms["v2 JSON"].append(raw(port, f"/v2/models/{NAME}/infer", v2_json_body(row, inputs)))
        body, length = v2_binary_body(row, inputs)
        header = {"Inference-Header-Content-Length": str(length)}
        forms["v2 binary"].append(raw(port, f"/v2/models/{NAME}/infer", body, header))
    return forms


def check_alike(port: int, rows: list[dict[str, Any]]) -> float:
    """The largest difference between v1's and v2's probabilities on the first rows."""
    inputs = httpx.get(f"http://127.0.0.1:{port}/v2/models/{NAME}", timeout=30).json()["inputs"]
    worst = 0.0
    for row in rows[:20]:
        v1 = httpx.post(
            f"http://127.0.0.1:{port}/v1/models/{NAME}:predict",
            json={"instances": [row]},
            timeout=30,
        ).json()["predictions"][0]
        v2 = httpx.post(
            f"http://127.0.0.1:{port}/v2/models/{NAME}/infer",
            content=v2_json_body(row, inputs),
            timeout=30,
        ).json()["outputs"]
        probabilities = next(o["data"] for o in v2 if o["name"] == "probabilities")
        worst = max(worst, float(np.max(np.abs(np.subtract(probabilities, v1["probabilities"])))))
    return worst


def phase(port: int, raws: list[bytes], concurrency: int, requests: int) -> dict[str, Any]:
    latencies, failed, wall = asyncio.run(
        run_load(port, raws, concurrency=concurrency, requests=requests, max_seconds=600)
    )
    ms = np.asarray(latencies) * 1000 if latencies else np.asarray([np.nan])
    return {
        "requests": len(latencies) + failed,
        "failed": failed,
        "seconds": wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "rows_per_second": len(latencies) / wall if wall else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/adult-income/latest")
    parser.add_argument("--data", type=Path, default=ADULT_TEST)
    parser.add_argument("--requests", type=int, default=2_000, help="per form and concurrency")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rows = load_rows(args.run, 5000, args.data)
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="v2-bench-") as folder:
        port = free_port()
        process = start_server("mlcli", args.run, port, Path(folder) / "mlcli.log")
        try:
            difference = check_alike(port, rows)
            forms = requests_of(port, rows)
            for _ in range(args.rounds):
                for form in FORMS:
                    phase(port, forms[form], 1, 50)  # warm-up
                    for concurrency in (1, args.concurrency):
                        figures = phase(port, forms[form], concurrency, args.requests)
                        results.setdefault((form, concurrency), []).append(figures)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    print(f"largest |v1 - v2| probability on 20 rows: {difference:.2g}")
    print(
        f"{'form':<10} {'conc':>4} {'requests':>8} {'failed':>6} {'rows/s':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7}"
    )
    table = []
    for (form, concurrency), rounds in results.items():
        row = {
            "form": form,
            "concurrency": concurrency,
            "requests": sum(r["requests"] for r in rounds),
            "failed": sum(r["failed"] for r in rounds),
            "rows_per_second": float(np.median([r["rows_per_second"] for r in rounds])),
            "p50_ms": float(np.median([r["p50_ms"] for r in rounds])),
            "p99_ms": float(np.median([r["p99_ms"] for r in rounds])),
        }
        table.append(row)
        print(
            f"{form:<10} {concurrency:>4} {row['requests']:>8} {row['failed']:>6} "
            f"{row['rows_per_second']:>8.1f} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f}"
        )
    if args.json:
        figures = {
            "phases": table,
            "max_probability_difference": difference,
            "cpus": os.cpu_count(),
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if any(row["failed"] for row in table):
        sys.exit(1)


if __name__ == "__main__":
    main()
