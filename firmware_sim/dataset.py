"""Dataset mode: simulated history written straight to CSV, no Modbus.

Layout of the output folder::

    dataset.yaml              what the models read (files, columns, split, labels)
    data/<site>/<device>.csv  one continuous recording per device:
                              time, asset_id, asset_type, the numeric points, then the
                              labels: anomaly (1 while a fault's effect is at least
                              faults.ANOMALY_SEVERITY of its effect at failure, until
                              its repair, tripped time included) and fault (the type of
                              the fault present, from its onset; empty when healthy)
    failures.csv              asset_id, timestamp, fault_type
    events.csv                asset_id, timestamp, kind (maintenance | error), code
    ground_truth.jsonl        every onset, failure and maintenance (firmware_sim.groundtruth)

Signal columns are the profile's numeric points as a reader decodes them (quantised to
the register's resolution; enums and bit fields as integer codes; the serial number is
left out). Devices are simulated in fixed groups of one asset type (the grouping never
depends on the number of worker processes), and groups run in parallel processes; the
output is byte-identical for the same fleet file and seed.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv
import yaml

from edge_agent.profiles import DataType, DeviceProfile, PointKind
from firmware_sim.engine import DeviceBatch, check_profile, quantize_array, site_conditions
from firmware_sim.environment import SiteEnvironment
from firmware_sim.errors import SimError
from firmware_sim.faults import DevicePlan, plan_device
from firmware_sim.fleet import Fleet, FleetDevice
from firmware_sim.groundtruth import GroundTruthEvent, iso

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

#: Devices simulated together (a fixed property of the fleet order, not of the machine).
GROUP_SIZE = 50
#: Per-row ground truth columns after the points.
LABEL_COLUMNS = ("anomaly", "fault")
#: Share of the period used for training in the split written to dataset.yaml.
TRAIN_SHARE = 0.7


@dataclass(frozen=True)
class DatasetSummary:
    out_dir: Path
    devices: int
    rows: int
    failures: int
    seconds: float


def iter_chunks(
    fleet: Fleet,
    devices: Sequence[FleetDevice],
    plans: Sequence[DevicePlan],
    steps: int,
    step_s: float,
    chunk: int = 1440,
) -> Iterator[tuple[F64, dict[str, F64]]]:
    """Simulate ``devices`` (one asset type) for ``steps`` steps from ``fleet.start``;
    yields (epoch seconds (n,), signals {name: (n, devices)}) per chunk."""
    start = fleet.start.astimezone(UTC)
    sites = {d.site.id: d.site for d in devices}
    envs = {sid: SiteEnvironment(s, fleet.seed, start) for sid, s in sites.items()}
    batch = DeviceBatch(fleet, devices, plans, envs, step_s)
    t0 = start.timestamp()
    for k0 in range(0, steps, chunk):
        n = min(chunk, steps - k0)
        t = t0 + (k0 + np.arange(n, dtype=np.float64)) * step_s
        yield t, batch.run(t, site_conditions(envs, t))


def _columns(profile: DeviceProfile) -> list[str]:
    return [p.name for p in profile.points if p.type is not DataType.STRING]


def _time_strings(t: F64) -> pa.Array:
    stamps = np.datetime_as_string(t.astype(np.int64).astype("datetime64[s]"), unit="s")
    return pa.array(np.char.add(stamps, "Z"))


def _bits_column(
    profile: DeviceProfile, name: str, out: Mapping[str, F64], i: int
) -> npt.NDArray[np.int64]:
    p = profile.point(name)
    raw = np.zeros(out[next(iter(out))].shape[0], dtype=np.int64)
    for bit_name, bit in (p.bits or {}).items():
        raw |= (out[f"{name}.{bit_name}"][:, i] > 0.5).astype(np.int64) << bit
    return raw


def _write_group(
    fleet: Fleet,
    devices: Sequence[FleetDevice],
    profiles: Mapping[str, DeviceProfile],
    out_dir: Path,
    steps: int,
    step_s: float,
    report: Callable[[float], None],
) -> int:
    plans = [plan_device(fleet, d) for d in devices]
    paths = [out_dir / "data" / d.site.id / f"{d.id}.csv" for d in devices]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    files = [path.open("wb") for path in paths]
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    rows = 0
    try:
        for f, dev in zip(files, devices, strict=True):
            header = [
                "time",
                "asset_id",
                "asset_type",
                *_columns(profiles[dev.id]),
                *LABEL_COLUMNS,
            ]
            f.write((",".join(header) + "\n").encode("ascii"))
        for t, out in iter_chunks(fleet, devices, plans, steps, step_s):
            n = t.size
            times = _time_strings(t)
            for i, dev in enumerate(devices):
                profile = profiles[dev.id]
                cols: dict[str, pa.Array] = {
                    "time": times,
                    "asset_id": pa.array(np.full(n, dev.id)),
                    "asset_type": pa.array(np.full(n, dev.spec.asset_type)),
                }
                for p in profile.points:
                    if p.type is DataType.STRING:
                        continue
                    if p.bits:
                        cols[p.name] = pa.array(_bits_column(profile, p.name, out, i))
                    else:
                        q = quantize_array(p, out[p.name][:, i])
                        cols[p.name] = pa.array(q.astype(np.int64) if q.dtype == bool else q)
                fault = plans[i].active_fault(t)
                cols["anomaly"] = pa.array(plans[i].anomalous(t).astype(np.int64))
                cols["fault"] = pa.array(fault)
                table = pa.table(cols)
                pacsv.write_csv(table, files[i], options)
            rows += n * len(devices)
            report(n * step_s / 86400.0 * len(devices))
    finally:
        for f in files:
            f.close()
    return rows


# Worker processes: the progress queue is handed over by the pool's initializer.
_progress_queue: Any = None


def _init_worker(q: Any) -> None:
    global _progress_queue
    _progress_queue = q


def _worker(
    args: tuple[Fleet, list[FleetDevice], dict[str, DeviceProfile], Path, int, float],
) -> int:
    fleet, devices, profiles, out_dir, steps, step_s = args
    q = _progress_queue
    return _write_group(fleet, devices, profiles, out_dir, steps, step_s, lambda x: q.put(x))


def groups_of(fleet: Fleet) -> list[list[FleetDevice]]:
    """Fixed simulation groups: per asset type, in fleet order, at most GROUP_SIZE each."""
    out: list[list[FleetDevice]] = []
    for asset in ("compressor", "fan"):
        devs = [d for d in fleet.devices() if d.spec.asset_type == asset]
        out.extend(devs[i : i + GROUP_SIZE] for i in range(0, len(devs), GROUP_SIZE))
    return out


def write_dataset(
    fleet: Fleet,
    profiles: Mapping[str, DeviceProfile],
    out_dir: Path,
    *,
    days: float,
    resolution_s: int = 60,
    progress: Callable[[float], None] | None = None,
    workers: int | None = None,
) -> DatasetSummary:
    """Simulate ``days`` of the fleet at ``resolution_s`` and write the dataset folder.

    ``progress`` is called with increments of device-days completed. ``workers``
    processes (default: the CPU count, at most the number of groups) share the work;
    the output does not depend on it.
    """
    began = time.perf_counter()
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    if resolution_s < 1:
        raise ValueError(f"resolution_s must be at least 1 s, got {resolution_s}")
    steps = round(days * 86400.0 / resolution_s)
    devices = fleet.devices()
    for d in devices:
        if d.id not in profiles:
            raise SimError(f"no profile given for device {d.id}")
        check_profile(d, profiles[d.id], fleet.name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda _x: None)
    groups = groups_of(fleet)
    step_s = float(resolution_s)
    n_workers = min(workers or os.cpu_count() or 1, len(groups))
    rows = 0
    if n_workers <= 1:
        for g in groups:
            rows += _write_group(fleet, g, profiles, out_dir, steps, step_s, report)
    else:
        rows = _run_parallel(
            fleet, groups, dict(profiles), out_dir, steps, step_s, report, n_workers
        )

    start = fleet.start.astimezone(UTC)
    end = start + timedelta(seconds=steps * step_s)
    events = sorted(e for d in devices for e in plan_device(fleet, d).events if e.time < end)
    failures = _write_labels(out_dir, events)
    _write_manifest(fleet, profiles, out_dir, start, end)
    seconds = time.perf_counter() - began
    log.info(
        "dataset %s: %d devices, %d rows, %d failures in %.1f s",
        out_dir,
        len(devices),
        rows,
        failures,
        seconds,
    )
    return DatasetSummary(out_dir, len(devices), rows, failures, seconds)


def _run_parallel(
    fleet: Fleet,
    groups: list[list[FleetDevice]],
    profiles: dict[str, DeviceProfile],
    out_dir: Path,
    steps: int,
    step_s: float,
    report: Callable[[float], None],
    n_workers: int,
) -> int:
    # spawn, not fork: the caller may run threads (a progress bar's monitor), and forking
    # a threaded process is unsafe.
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with ctx.Pool(n_workers, initializer=_init_worker, initargs=(q,)) as pool:
        results = [
            pool.apply_async(_worker, ((fleet, g, profiles, out_dir, steps, step_s),))
            for g in groups
        ]
        while not all(r.ready() for r in results):
            with contextlib.suppress(queue.Empty):
                report(q.get(timeout=0.2))
        rows = sum(r.get() for r in results)
    while True:
        try:
            report(q.get_nowait())
        except queue.Empty:
            break
    return rows


def _write_labels(out_dir: Path, events: list[GroundTruthEvent]) -> int:
    failures = 0
    with (
        (out_dir / "ground_truth.jsonl").open("w", encoding="utf-8") as gt,
        (out_dir / "failures.csv").open("w", encoding="utf-8", newline="") as ff,
        (out_dir / "events.csv").open("w", encoding="utf-8", newline="") as ef,
    ):
        fw = csv.writer(ff, lineterminator="\n")
        ew = csv.writer(ef, lineterminator="\n")
        fw.writerow(["asset_id", "timestamp", "fault_type"])
        ew.writerow(["asset_id", "timestamp", "kind", "code"])
        for e in events:
            gt.write(json.dumps(e.to_json(), separators=(",", ":")) + "\n")
            if e.event == "failure":
                failures += 1
                fw.writerow([e.device_id, iso(e.time), e.fault_type])
                ew.writerow([e.device_id, iso(e.time), "error", e.alarm_code])
            elif e.event == "maintenance":
                ew.writerow([e.device_id, iso(e.time), "maintenance", e.kind])
    return failures


def _operating(profile: DeviceProfile) -> str | None:
    """When the device runs: its state point whose enum has a ``running`` value."""
    for p in profile.points:
        for code, label in (p.enum or {}).items():
            if p.kind is PointKind.STATE and label == "running":
                return f"{p.name}=={code}"
    return None


def _write_manifest(
    fleet: Fleet,
    profiles: Mapping[str, DeviceProfile],
    out_dir: Path,
    start: datetime,
    end: datetime,
) -> None:
    # The sampled quantities models learn from; counters, states and settings are columns
    # too, but not signals.
    signals: list[str] = []
    for d in fleet.devices():
        for p in profiles[d.id].points:
            if p.kind is PointKind.MEASUREMENT and p.name not in signals:
                signals.append(p.name)
    split = start + (end - start) * TRAIN_SHARE
    operating: dict[str, str] = {}
    for d in fleet.devices():
        op = _operating(profiles[d.id])
        if op is not None:
            operating.setdefault(d.spec.asset_type, op)
    manifest = {
        "name": fleet.name,
        "files": ["data/**/*.csv"],
        "delimiter": ",",
        "timestamp": {"column": "time"},
        "asset": {"column": "asset_id"},
        "asset_type": {"column": "asset_type"},
        "signals": signals,
        "labels": {"anomaly": "anomaly"},
        "split": {"train_until": iso(split.replace(microsecond=0))},
        "failures": "failures.csv",
        "events": "events.csv",
    }
    if operating:
        manifest["operating"] = operating
    text = yaml.safe_dump(manifest, sort_keys=False, default_flow_style=None, width=120)
    (out_dir / "dataset.yaml").write_text(text, encoding="utf-8")
