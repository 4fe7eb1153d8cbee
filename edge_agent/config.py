"""The gateway config: what one agent reads, how it scores, buffers and ships.

A YAML file with a ``schema_version``, validated once at start-up; every error names
the file, the key and what was expected. Example (``deploy/gateway/agent.example.yaml``
is a complete one)::

    schema_version: 1
    gateway: {id: gw-dxb-1}
    buses:
      - {id: plant-room, type: tcp, host: 10.0.0.20, port: 502}
      - {id: rs485-1, type: rtu, port: /dev/ttyUSB0, baudrate: 19200, parity: E}
    devices:
      - {id: cc-dxb-01, bus: plant-room, unit_id: 1, profile: ew-cc100}
      - {id: fan-dxb-01, bus: rs485-1, unit_id: 7, profile: ew-fc200}
    buffer: {path: /var/lib/edgewatch/buffer.sqlite}
    uplink:
      mqtt: {host: broker.example.net, port: 8883, username: gw-dxb-1,
             password_file: /etc/edgewatch/mqtt.password, tls: {ca_file: /etc/ssl/ca.pem}}

Relative paths (profiles, keys, files) are relative to the config file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_agent.configfile import read_yaml, validate_document
from edge_agent.errors import ConfigError, ProfileError
from edge_agent.profiles import DeviceProfile, resolve_profile

CONFIG_SCHEMA_VERSION = 1

Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
Seconds = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySettings(_Strict):
    id: Ident
    """The gateway's identity everywhere: MQTT client id and username, topic subtree."""
    site: Ident | None = None


class TcpBus(_Strict):
    """A Modbus TCP endpoint (a controller, or a gateway with devices behind unit ids)."""

    id: Ident
    type: Literal["tcp"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    timeout_s: Seconds = 1.0
    max_connections: Annotated[int, Field(ge=1, le=16)] = 1
    """Connections the endpoint accepts; with 1 (the default, what most controllers take)
    every device behind it shares one connection and one request queue."""
    max_in_flight: Annotated[int, Field(ge=1, le=16)] = 1
    """Requests sent to a device before its answers come back (the MBAP transaction id
    pairs them): above 1, the read blocks of one poll go out together and cost one round
    trip. 1, the default, is what every device takes; raise it only for endpoints that
    accept pipelined requests (the Modbus TCP implementation guide's
    NumberMaxOfServerTransaction)."""


class RtuBus(_Strict):
    """An RS-485 line: one request at a time, with the inter-frame silence."""

    id: Ident
    type: Literal["rtu"]
    port: str
    """Serial device, e.g. /dev/ttyUSB0."""
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 19200
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    timeout_s: Seconds = 0.5
    inter_frame_gap_s: Annotated[float, Field(ge=0, le=1)] | None = None
    """Silence between frames; default 3.5 characters (1.75 ms above 19,200 baud)."""


class RtuOverTcpBus(_Strict):
    """RTU frames carried over a TCP socket (a serial-to-Ethernet converter)."""

    id: Ident
    type: Literal["rtu_over_tcp"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    timeout_s: Seconds = 1.0


Bus = Annotated[TcpBus | RtuBus | RtuOverTcpBus, Field(discriminator="type")]


MIN_PERIOD_S = 0.02
"""The shortest poll period a group may have (seconds)."""


class PollGroup(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    period_s: Annotated[float, Field(ge=MIN_PERIOD_S, le=86400)]
    window_s: Annotated[float, Field(ge=1, le=86400)]
    """Feature window: at each window end the group's features are computed and scored."""
    hop_s: Annotated[float, Field(gt=0, le=86400)] | None = None
    """One window ends every ``hop_s`` (default ``window_s``, back-to-back windows); a
    shorter hop makes the windows overlap (sliding windows)."""

    @model_validator(mode="after")
    def _window_holds_samples(self) -> PollGroup:
        if self.window_s < 2 * self.period_s:
            raise ValueError(
                f"window_s {self.window_s} holds fewer than 2 polls of period_s {self.period_s}"
            )
        if self.hop_s is not None and self.hop_s > self.window_s:
            raise ValueError(
                f"hop_s {self.hop_s} is longer than window_s {self.window_s}: samples "
                "between windows would be lost"
            )
        if self.hop_s is not None and self.hop_s < self.period_s:
            raise ValueError(
                f"hop_s {self.hop_s} is shorter than period_s {self.period_s}: "
                "windows would end with no new poll in them"
            )
        return self

    @property
    def hop(self) -> float:
        """Seconds between window ends (``hop_s``, or ``window_s`` when not set)."""
        return self.window_s if self.hop_s is None else self.hop_s


DEFAULT_POLL_GROUPS = (
    PollGroup(name="fast", period_s=1.0, window_s=60.0),
    PollGroup(name="default", period_s=10.0, window_s=300.0),
    PollGroup(name="slow", period_s=60.0, window_s=900.0),
)


class DeviceSettings(_Strict):
    id: Ident
    bus: Ident
    unit_id: Annotated[int, Field(ge=0, le=255)]
    profile: str
    """Shipped profile id, or a path to a profile YAML."""
    poll_groups: dict[str, str] = {}
    """Point name -> poll group, overriding the profile's suggestion."""
    max_gap: Annotated[int, Field(ge=0, le=124)] = 16
    """Unmapped registers worth reading through rather than starting a new request."""
    max_registers: Annotated[int, Field(ge=1, le=125)] = 125
    """Registers per request at most (some controllers take fewer than the standard 125)."""


class ThresholdAlarm(_Strict):
    """Raised when ``point`` stays beyond ``above``/``below`` for ``min_duration_s``;
    cleared when it stays back past ``clear_*`` (hysteresis) for ``min_duration_s``."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    point: str
    devices: list[Ident] | None = None
    """Devices it applies to; default: every device whose profile has the point."""
    above: float | None = None
    clear_below: float | None = None
    below: float | None = None
    clear_above: float | None = None
    min_duration_s: Annotated[float, Field(ge=0)] = 60.0
    severity: Literal["info", "minor", "major", "critical"] = "major"

    @model_validator(mode="after")
    def _one_side(self) -> ThresholdAlarm:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of above or below")
        if self.above is not None:
            clear = self.above if self.clear_below is None else self.clear_below
            if clear > self.above:
                raise ValueError(f"clear_below {clear} must not be above above {self.above}")
        if self.below is not None:
            clear = self.below if self.clear_above is None else self.clear_above
            if clear < self.below:
                raise ValueError(f"clear_above {clear} must not be below below {self.below}")
        return self


class AlarmSettings(_Strict):
    thresholds: list[ThresholdAlarm] = []
    offline_after_s: Annotated[float, Field(gt=0)] = 60.0
    """A device that has not answered for this long raises ``device_offline``."""
    anomaly_min_windows: Annotated[int, Field(ge=1, le=1000)] = 3
    """Consecutive anomalous windows that raise ``anomaly_sustained``."""


class ModelSettings(_Strict):
    dir: Path = Path("/var/lib/edgewatch/models")
    """Folder of ONNX files and their manifest; updates are installed here."""
    trusted_keys: list[Path] = []
    """Ed25519 public keys (PEM) whose signatures on model manifests are accepted."""
    allow_unsigned: bool = False
    """Development only: load a model folder found at start without a valid signature from
    a trusted key (logged at WARNING). Updates are always verified."""
    intra_op_threads: Annotated[int, Field(ge=1, le=16)] = 1
    """Threads one model inference may use (a gateway has 1-4 cores)."""


DEFAULT_COMMIT_INTERVAL_S = 0.01


class BufferSettings(_Strict):
    path: Path = Path("/var/lib/edgewatch/buffer.sqlite")
    max_bytes: Annotated[int, Field(ge=1 << 20)] = 256 << 20
    max_age_s: Annotated[float, Field(gt=0)] = 30 * 86400.0
    policy: Literal["drop_oldest", "thin", "refuse_new"] = "drop_oldest"
    """When full: delete the oldest records, thin out history (keep every other record of
    the oldest half), or refuse new records. Every record dropped is counted and reported."""
    commit_interval_s: Annotated[float, Field(ge=0, le=1)] = DEFAULT_COMMIT_INTERVAL_S
    """Group commit: the records of the polls of this many seconds are written in one
    transaction. A record is durable within this long of its poll (the records of the last
    interval are lost if the agent dies); a longer interval costs less CPU and adds as much
    latency. 0 commits every poll's records at once."""


class TlsSettings(_Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False
    """Skip certificate verification: only for tests on loopback."""


class BatchSettings(_Strict):
    max_records: Annotated[int, Field(ge=1, le=100_000)] = 500
    max_bytes: Annotated[int, Field(ge=1024, le=16 << 20)] = 256 << 10
    max_delay_s: Annotated[float, Field(ge=0, le=60)] = 0.2
    compression: Literal["zlib", "none"] = "zlib"


class MqttSettings(_Strict):
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 8883
    tls: TlsSettings | None = TlsSettings()
    """TLS settings; null for plain MQTT (loopback tests only)."""
    username: str | None = None
    password_file: Path | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    session_expiry_s: Annotated[int, Field(ge=0)] = 7 * 86400
    batch: BatchSettings = BatchSettings()


class HttpsSettings(_Strict):
    url: str
    token_file: Path | None = None
    ca_file: Path | None = None
    timeout_s: Seconds = 10.0
    batch: BatchSettings = BatchSettings()


class UplinkSettings(_Strict):
    mqtt: MqttSettings | None = None
    https: HttpsSettings | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> UplinkSettings:
        if (self.mqtt is None) == (self.https is None):
            raise ValueError("configure exactly one of mqtt or https")
        return self


class GatewayConfig(_Strict):
    schema_version: Literal[1]
    config_version: Annotated[int, Field(ge=0)] = 0
    """Version of this gateway's config: a config change over the downlink must carry a
    higher one (see :mod:`edge_agent.configsync`)."""
    gateway: GatewaySettings
    buses: Annotated[list[Bus], Field(min_length=1)]
    poll_groups: list[PollGroup] = list(DEFAULT_POLL_GROUPS)
    devices: Annotated[list[DeviceSettings], Field(min_length=1)]
    alarms: AlarmSettings = AlarmSettings()
    models: ModelSettings = ModelSettings()
    buffer: BufferSettings = BufferSettings()
    uplink: UplinkSettings

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        for kind, ids in (
            ("bus", [b.id for b in self.buses]),
            ("device", [d.id for d in self.devices]),
            ("poll group", [g.name for g in self.poll_groups]),
        ):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"{kind} {', '.join(dupes)} is defined more than once")
        buses = {b.id for b in self.buses}
        groups = {g.name for g in self.poll_groups}
        seen: dict[tuple[str, int], str] = {}
        for d in self.devices:
            if d.bus not in buses:
                raise ValueError(f"device {d.id}: bus {d.bus!r} is not one of {sorted(buses)}")
            if (d.bus, d.unit_id) in seen:
                raise ValueError(
                    f"device {d.id}: unit_id {d.unit_id} on bus {d.bus} is already "
                    f"{seen[(d.bus, d.unit_id)]}"
                )
            seen[(d.bus, d.unit_id)] = d.id
            unknown = sorted(set(d.poll_groups.values()) - groups)
            if unknown:
                raise ValueError(f"device {d.id}: poll group {unknown} is not defined")
        return self

    def bus(self, bus_id: str) -> TcpBus | RtuBus | RtuOverTcpBus:
        return next(b for b in self.buses if b.id == bus_id)


class LoadedConfig(BaseModel):
    """A validated config with each device's profile resolved."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: GatewayConfig
    source: str
    base_dir: Path
    profiles: dict[str, DeviceProfile]
    """Device id -> profile."""

    def path(self, p: Path) -> Path:
        """A path from the config, resolved against the config file's folder."""
        return p if p.is_absolute() else self.base_dir / p


def parse_config(
    data: object, source: str = "<config>", base_dir: Path | None = None
) -> LoadedConfig:
    """Validate parsed YAML, resolve every device's profile and poll-group overrides."""
    config = validate_document(GatewayConfig, data, source, ConfigError, CONFIG_SCHEMA_VERSION)
    base = base_dir if base_dir is not None else Path.cwd()
    profiles: dict[str, DeviceProfile] = {}
    for i, d in enumerate(config.devices):
        key = f"devices[{i}]({d.id})"
        try:
            profile = resolve_profile(d.profile, base)
        except ProfileError as exc:
            raise ConfigError(source, f"{key}.profile", str(exc)) from None
        unknown = sorted(set(d.poll_groups) - set(profile.names))
        if unknown:
            raise ConfigError(
                source, f"{key}.poll_groups", f"profile {profile.id} has no point {unknown}"
            )
        groups = {g.name for g in config.poll_groups}
        missing = sorted(
            {p.poll_group for p in profile.points if p.name not in d.poll_groups} - groups
        )
        if missing:
            raise ConfigError(
                source,
                f"{key}.profile",
                f"profile {profile.id} suggests poll group {missing}, which poll_groups does "
                f"not define; define it or map those points in {key}.poll_groups",
            )
        profiles[d.id] = profile
    return LoadedConfig(config=config, source=source, base_dir=base, profiles=profiles)


def load_config(path: Path | str) -> LoadedConfig:
    """Read and validate a gateway config file."""
    path = Path(path)
    return parse_config(read_yaml(path, ConfigError), str(path), path.parent)
