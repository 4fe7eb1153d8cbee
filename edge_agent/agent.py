"""The agent: poll → windows → features → score → alarms → buffer → uplink.

:class:`Agent` wires the parts together and owns nothing else:

- the :class:`~edge_agent.poller.Poller` hands each poll's result to :meth:`Agent._on_result`
  on the event loop;
- samples fill a :class:`~edge_agent.windows.WindowBuffer` per device and poll group; a
  closed window becomes a ``features`` record (:mod:`edge_agent.features`) and, when the
  device's asset type has a model for that window, a ``score`` record
  (:mod:`edge_agent.scoring`); windows are staggered per device (each device's windows end
  at its own offset, :func:`~edge_agent.windows.window_offset`), and closed windows that
  still coincide (devices with close offsets, a device's groups) queue and are worked off
  one every ``WINDOW_SPACING_S``; the queue is drained when the agent stops;
- counters (energy, runtime, starts) read in a poll become an ``energy`` record;
- alarm transitions (:mod:`edge_agent.alarms`) become ``alarm`` records;
- every ``health_every_s`` a ``health`` record says how the gateway is doing, and the same
  facts go to a status file that ``edgewatch-agent status`` reads;
- records are group-committed: the records of the polls of the last ``commit_interval_s``
  (the config's ``buffer.commit_interval_s``, default 0.01 s) collect in memory and go
  into the :class:`~edge_agent.store.RecordStore` in one transaction (the durable point),
  then the :class:`~edge_agent.forwarder.Forwarder` ships them and deletes them on the
  cloud's ack. The bound: a record is durable within ``commit_interval_s`` of its poll;
  the records of the last ``commit_interval_s`` (≤ 10 ms by default) are in memory, like
  the open windows are, and are lost with them if the process dies. A longer interval
  costs less CPU (fewer transactions, fewer forwarder wakes) and adds as much latency.
  More than ``MAX_PENDING_ITEMS`` waiting records are committed at once; housekeeping
  and :meth:`Agent.stop` (on the way out of :meth:`Agent.run`) commit whatever waits.

Downlink: a signed model update is installed by the :class:`~edge_agent.models.ModelStore`
(refused updates leave the running model); ``poll_now`` polls the named devices at once;
a signed, newer config change is kept (:mod:`edge_agent.configsync`) and the agent stops
with ``reload_requested`` so that its runner starts it again on the new config.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import resource
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent import __version__
from edge_agent.alarms import AlarmEngine, AlarmEvent
from edge_agent.config import DEFAULT_COMMIT_INTERVAL_S, LoadedConfig
from edge_agent.configsync import check_config_change, install_config_change
from edge_agent.errors import EdgeWatchError, ProtocolError, UpdateRefused
from edge_agent.features import (
    COUNTER_FEATURES,
    SIGNAL_FEATURES,
    STATE_FEATURES,
    feature_vector,
)
from edge_agent.forwarder import Forwarder
from edge_agent.models import ModelStore
from edge_agent.poller import Poller, PollResult
from edge_agent.profiles import DeviceProfile, PointKind
from edge_agent.protocol import (
    DownlinkKind,
    ModelUpdate,
    PollNow,
    RecordKind,
    decode_downlink,
)
from edge_agent.scoring import Scorer
from edge_agent.store import Item, RecordStore
from edge_agent.uplink import Uplink
from edge_agent.windows import Window, WindowBuffer

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
COMMIT_INTERVAL_S = DEFAULT_COMMIT_INTERVAL_S
"""Default bound on how long a record waits in memory before its transaction (the
config's ``buffer.commit_interval_s``)."""
MAX_PENDING_ITEMS = 5000
"""Records waiting in memory past this many are committed at once."""
WINDOW_SPACING_S = 0.01
"""Closed windows' features are computed one per this many seconds (see _defer_window)."""
MAX_WINDOW_BACKLOG = 50
"""Past this many queued closed windows, several are worked off at once."""


def status_path(loaded: LoadedConfig) -> Path:
    """Where the running agent writes its status: beside the buffer."""
    return loaded.path(loaded.config.buffer.path).parent / STATUS_FILE


def make_uplink(loaded: LoadedConfig) -> Uplink:
    """The uplink the config names (MQTT or HTTPS)."""
    gw = loaded.config.gateway.id
    settings = loaded.config.uplink
    if settings.mqtt is not None:
        from edge_agent.uplink.mqtt import MqttUplink

        return MqttUplink(gw, settings.mqtt, loaded.base_dir)
    from edge_agent.uplink.https import HttpsUplink

    assert settings.https is not None  # noqa: S101 - the config validator enforces one
    return HttpsUplink(gw, settings.https, loaded.base_dir)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


_KIND_FEATURES = {
    PointKind.MEASUREMENT: SIGNAL_FEATURES,
    PointKind.COUNTER: COUNTER_FEATURES,
    PointKind.STATE: STATE_FEATURES,
}


def point_feature_names(window: Window, profile: DeviceProfile) -> list[str]:
    """The ``point__feature`` names of every feature of every point in ``window``."""
    kinds = {p.name: p.kind for p in profile.points}
    return [
        f"{point}__{f}" for point in window.series for f in _KIND_FEATURES.get(kinds[point], ())
    ]


def window_features(
    window: Window, profile: DeviceProfile, extra: Sequence[str] = ()
) -> tuple[dict[str, float | None], dict[str, float]]:
    """Every feature of every point in a closed window, by ``point__feature`` name, as the
    features record carries them (None where undefined); and the raw values of those and
    of the ``extra`` features (a model's), all from one vectorised
    :func:`~edge_agent.features.feature_vector` call for the whole window."""
    names = point_feature_names(window, profile)
    known = set(names)
    wanted = names + [n for n in dict.fromkeys(extra) if n not in known]
    values = feature_vector(window.series, wanted, window.ts).tolist()
    raw = dict(zip(wanted, values, strict=True))
    return {n: _finite(raw[n]) for n in names}, raw


class Agent:
    """One gateway's agent. ``uplink`` may be given (tests); otherwise the config's."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        uplink: Uplink | None = None,
        health_every_s: float = 60.0,
        clock: Any = time.time,
        commit_interval_s: float | None = None,
    ) -> None:
        self.loaded = loaded
        cfg = loaded.config
        self.commit_interval_s = (
            cfg.buffer.commit_interval_s if commit_interval_s is None else commit_interval_s
        )
        """Group-commit interval: ``commit_interval_s`` if given, else the config's."""
        self._pending: list[Item] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._clock = clock
        self.health_every_s = health_every_s
        self.store = RecordStore(
            cfg.buffer.model_copy(update={"path": loaded.path(cfg.buffer.path)}), clock=clock
        )
        self.uplink = uplink if uplink is not None else make_uplink(loaded)
        link = cfg.uplink.mqtt or cfg.uplink.https
        assert link is not None  # noqa: S101 - the config validator enforces one
        self.forwarder = Forwarder(self.store, self.uplink, link.batch, clock=clock)
        models_dir = loaded.path(cfg.models.dir)
        self.models = ModelStore(
            cfg.models.model_copy(
                update={
                    "dir": models_dir,
                    "trusted_keys": [loaded.path(k) for k in cfg.models.trusted_keys],
                }
            ),
            clock=clock,
        )
        self.scorer = Scorer(self.models)
        self.alarms = AlarmEngine(cfg.alarms, loaded.profiles)
        groups = {g.name: g for g in cfg.poll_groups}
        self._windows: dict[tuple[str, str], WindowBuffer] = {}
        self._closed_windows: collections.deque[tuple[Window, DeviceProfile]] = collections.deque()
        self._window_handle: asyncio.TimerHandle | None = None
        self._counters: dict[int, dict[str, str]] = {}
        """Counter points' units by ``id()`` of a profile of ``loaded.profiles``."""
        self._groups = groups
        self.poller = Poller(loaded, self._on_result, clock=clock)
        self.status_file = status_path(loaded)
        self.counts: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()
        self._started = 0.0
        self.reload_requested = False
        """Set when a config change was kept: whoever runs the agent starts a new one."""

    # -- life cycle ------------------------------------------------------------------------
    async def run(self) -> None:
        """Run until :meth:`stop`; the buffer is flushed and closed on the way out."""
        self._loop = asyncio.get_running_loop()
        self._started = self._clock()
        self.uplink.on_downlink = self._on_downlink
        self.uplink.start()
        self.forwarder.start()
        poll_task = asyncio.create_task(self.poller.run(), name="poller")
        try:
            while not self._stopping.is_set() and not poll_task.done():
                self._housekeeping()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), timeout=min(1.0, self.health_every_s)
                    )
        finally:
            await self.poller.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await poll_task  # the poller closes its links on the way out
            self._drain_windows()
            self.flush()
            self.forwarder.stop()
            self.uplink.stop()
            self._write_status()
            self.store.close()
        failed = poll_task.exception() if not poll_task.cancelled() else None
        if failed is not None:
            raise failed

    def stop(self) -> None:
        self._stopping.set()

    # -- the data path -----------------------------------------------------------------------
    def _on_result(self, result: PollResult) -> None:
        """One poll's result: alarms, windows, features, scores, energy → one transaction."""
        device_id, ts = result.device_id, result.ts
        items: list[Item] = []
        events: list[AlarmEvent] = list(self.alarms.on_poll(device_id, ts, result.ok))
        # The numbers read (bools as 0/1); strings are no samples.
        samples = {
            n: float(x) for n, v in result.values.items() if isinstance(x := v.value, (int, float))
        }
        if samples:
            events += self.alarms.on_sample(device_id, ts, samples)
            profile = self.loaded.profiles[device_id]
            buffer = self._window(device_id, result.group)
            closed = buffer.append(ts, samples)
            if closed is not None:
                self._defer_window(closed, profile)
            counter_units = self._counter_units(profile)
            counters = {n: v for n, v in samples.items() if n in counter_units}
            if counters:
                units = {n: counter_units[n] for n in counters}
                body = {"values": counters, "units": units}
                items.append((ts, RecordKind.ENERGY, device_id, body))
        if events:
            items += [self._alarm_item(e) for e in events]
        self.counts["polls"] += 1
        self._append(items)

    def _counter_units(self, profile: DeviceProfile) -> dict[str, str]:
        """The profile's counter points and their units (computed once per profile)."""
        units = self._counters.get(id(profile))
        if units is None:
            units = {p.name: p.unit for p in profile.points if p.kind is PointKind.COUNTER}
            self._counters[id(profile)] = units
        return units

    def _window(self, device_id: str, group: str) -> WindowBuffer:
        key = (device_id, group)
        buffer = self._windows.get(key)
        if buffer is None:
            buffer = WindowBuffer(device_id, self._groups[group])
            self._windows[key] = buffer
        return buffer

    def _window_records(
        self, window: Window, profile: DeviceProfile, events: list[AlarmEvent]
    ) -> list[Item]:
        features, raw = window_features(
            window, profile, self.scorer.feature_names(window, profile.asset_type)
        )
        body: dict[str, Any] = {
            "group": window.group,
            "start": window.start,
            "end": window.end,
            "n_samples": window.n_samples,
            "n_missing": window.n_missing,
            "features": features,
        }
        items: list[Item] = [(window.end, RecordKind.FEATURES, window.device_id, body)]
        self.counts["windows"] += 1
        try:
            score = self.scorer.score_window(window, profile.asset_type, raw)
        except EdgeWatchError as exc:
            self.counts["score_errors"] += 1
            log.warning("scoring %s window %s failed: %s", window.device_id, window.group, exc)
            return items
        if score is not None:
            self.counts["scores"] += 1
            for name, value in score.features.items():
                features.setdefault(name, _finite(value))
            items.append(
                (
                    window.end,
                    RecordKind.SCORE,
                    window.device_id,
                    {
                        "model_id": score.model_id,
                        "model_version": score.version,
                        "score": score.score,
                        "threshold": score.threshold,
                        "anomalous": score.anomalous,
                        "top_signals": [[s, v] for s, v in score.top_signals],
                        "group": window.group,
                    },
                )
            )
            events += self.alarms.on_score(
                window.device_id, window.end, score.anomalous, score.score
            )
        return items

    def _defer_window(self, window: Window, profile: DeviceProfile) -> None:
        """Queue a closed window's features and score: windows that close together (the
        stagger spreads devices' window ends, but two devices' offsets may be close, and
        a device's poll groups end on their own grids) are worked off one per
        ``WINDOW_SPACING_S`` so that polls keep flowing in between."""
        self._closed_windows.append((window, profile))
        if self._window_handle is None:
            loop = self._loop
            if loop is None or loop.is_closed():
                self._work_windows(len(self._closed_windows))
            else:
                self._window_handle = loop.call_later(WINDOW_SPACING_S, self._next_window)

    def _next_window(self) -> None:
        self._window_handle = None
        waiting = len(self._closed_windows)
        # Keep up when more windows close than the spacing allows.
        self._work_windows(max(1, waiting // MAX_WINDOW_BACKLOG))
        if self._closed_windows and self._loop is not None and not self._loop.is_closed():
            self._window_handle = self._loop.call_later(WINDOW_SPACING_S, self._next_window)

    def _work_windows(self, n: int) -> None:
        """Features, score and score alarms of the first ``n`` queued windows."""
        for _ in range(min(n, len(self._closed_windows))):
            window, profile = self._closed_windows.popleft()
            events: list[AlarmEvent] = []
            items = self._window_records(window, profile, events)
            items += [self._alarm_item(e) for e in events]
            self._append(items)

    def _drain_windows(self) -> None:
        if self._window_handle is not None:
            self._window_handle.cancel()
            self._window_handle = None
        self._work_windows(len(self._closed_windows))

    def _alarm_item(self, e: AlarmEvent) -> Item:
        self.counts[f"alarms_{e.state}"] += 1
        body = {
            "name": e.name,
            "state": e.state,
            "severity": e.severity,
            "value": e.value if e.value is None or math.isfinite(e.value) else None,
            "detail": e.detail,
        }
        return (e.ts, RecordKind.ALARM, e.device_id, body)

    def _append(self, items: list[Item]) -> None:
        """Queue ``items`` for the next group commit (at most ``commit_interval_s`` away)."""
        if not items:
            return
        self._pending += items
        if len(self._pending) >= MAX_PENDING_ITEMS or self.commit_interval_s <= 0:
            self.flush()
        elif self._flush_handle is None:
            loop = self._loop
            if loop is None or loop.is_closed():
                self.flush()
            else:
                self._flush_handle = loop.call_later(self.commit_interval_s, self.flush)

    def flush(self) -> None:
        """Commit the records waiting in memory in one transaction, then wake the forwarder."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        items, self._pending = self._pending, []
        if not items:
            return
        try:
            seqs = self._commit(items)
        except (ProtocolError, EdgeWatchError) as exc:
            self.counts["append_errors"] += 1
            log.error("cannot buffer %d records: %s", len(items), exc)
            return
        self.counts["records"] += len(seqs)
        self.forwarder.notify()

    def _commit(self, items: list[Item]) -> list[int]:
        try:
            return self.store.append(items)
        except ProtocolError:
            if len(items) == 1:
                raise
        # One invalid record must not take the other polls' records with it: store the
        # group one record at a time and leave out only the invalid ones.
        seqs: list[int] = []
        for item in items:
            try:
                seqs += self.store.append([item])
            except ProtocolError as exc:
                self.counts["append_errors"] += 1
                log.error("cannot buffer a %s record: %s", item[1], exc)
        return seqs

    # -- timed work ---------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        now = self._clock()
        items: list[Item] = [self._alarm_item(e) for e in self.alarms.tick(now)]
        for buffer in self._windows.values():
            closed = buffer.close_due(now)
            if closed is not None:
                profile = self.loaded.profiles[closed.device_id]
                events: list[AlarmEvent] = []
                items += self._window_records(closed, profile, events)
                items += [self._alarm_item(e) for e in events]
        if now - self.counts.get("last_health", 0) >= self.health_every_s:
            self.counts["last_health"] = int(now)
            items.append((now, RecordKind.HEALTH, None, self.health()))
            self._write_status()
        self._pending += items
        self.flush()

    def health(self) -> dict[str, Any]:
        """What ``status`` shows and the ``health`` record carries."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        devices = {
            d: {
                "state": s.state,
                "requests": s.requests,
                "ok": s.ok,
                "errors": dict(s.errors),
                "consecutive_failures": s.consecutive_failures,
                "rtt_ms": None if s.rtt_ewma_s is None else round(s.rtt_ewma_s * 1000, 2),
                "late_ms": None if s.late_ewma_s is None else round(s.late_ewma_s * 1000, 2),
                "last_ok_ts": s.last_ok_ts,
                "missed_polls": s.missed_polls,
                "unreadable": list(s.unreadable),
            }
            for d, s in self.poller.stats().items()
        }
        store = self.store.stats()
        return {
            "agent_version": __version__,
            "config_version": self.loaded.config.config_version,
            "uptime_s": round(self._clock() - self._started, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "buffer": {
                "depth": self.store.depth(),
                "bytes": self.store.size_bytes(),
                "oldest_ts": self.store.oldest_ts(),
                "dropped": {k: v for k, v in asdict(store).items() if isinstance(v, int)},
            },
            "uplink": {
                "connected": self.uplink.connected,
                **_jsonable(asdict(self.forwarder.stats())),
            },
            "models": {
                m.asset_type: {"model_id": m.model_id, "version": m.version}
                for m in self.models.models().values()
            },
            "devices": devices,
            "counts": {k: v for k, v in self.counts.items() if k != "last_health"},
            "active_alarms": len(self.alarms.active()),
        }

    def _write_status(self) -> None:
        path = self.status_file
        data = {"gateway": self.loaded.config.gateway.id, "ts": self._clock(), **self.health()}
        tmp = path.with_suffix(".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            self.counts["status_errors"] += 1
            log.debug("cannot write %s: %s", path, exc)

    # -- downlink (called on the uplink's thread) -------------------------------------------
    def _on_downlink(self, kind: DownlinkKind, payload: bytes) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._handle_downlink, kind, payload)

    def _handle_downlink(self, kind: DownlinkKind, payload: bytes) -> None:
        try:
            message = decode_downlink(kind, payload)
        except ProtocolError as exc:
            self.counts["downlink_rejected"] += 1
            log.warning("downlink %s rejected: %s", kind, exc)
            return
        if isinstance(message, ModelUpdate):
            try:
                model = self.models.install_update(
                    message.manifest, message.signature, message.onnx
                )
            except UpdateRefused as exc:
                self.counts[f"model_refused_{exc.reason}"] += 1
                log.warning("model update refused (%s); the running model stays", exc)
                return
            self.counts["model_updates"] += 1
            log.info(
                "model %s v%d installed for %s", model.model_id, model.version, model.asset_type
            )
        elif isinstance(message, PollNow):
            self.counts["poll_now"] += 1
            polled = self.poller.poll_now(message.devices)
            unknown = sorted(set(message.devices or ()) - set(polled))
            log.info("poll now (request %s): %s", message.request_id, ", ".join(polled) or "-")
            if unknown:
                log.warning("poll now (request %s): no device %s", message.request_id, unknown)
        else:
            try:
                check_config_change(
                    self.loaded,
                    message.document,
                    message.signature,
                    source=f"downlink config v{message.version}",
                    version=message.version,
                )
                where = install_config_change(self.loaded, message.document, message.signature)
            except UpdateRefused as exc:
                self.counts[f"config_refused_{exc.reason}"] += 1
                log.warning("config change refused (%s); the running config stays", exc)
                return
            except OSError as exc:
                self.counts["config_refused_write_failed"] += 1
                log.error("config change v%d not kept: %s", message.version, exc)
                return
            log.warning("config_version %d kept in %s; restarting on it", message.version, where)
            self.reload_requested = True
            self.stop()


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v if not isinstance(v, np.generic) else v.item()) for k, v in d.items()}
