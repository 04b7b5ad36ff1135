"""The node's shared vocabulary: settings, spooled instances, series, routes and job states."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path

from vision.errors import ConfigError

_DESTINATION = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Destination:
    """A DICOM peer results are sent to (C-STORE SCU)."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """`AE@host:port`, as `--dicom-destination` takes it."""
        match = _DESTINATION.match(text.strip())
        if not match or not 0 < int(match["port"]) < 65536:
            raise ConfigError(
                f"destination {text!r}: write AE_TITLE@HOST:PORT, e.g. PACS@10.0.0.5:104"
            )
        return cls(match["ae"], match["host"], int(match["port"]))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeSettings:
    """Everything the DICOM node is configured with (flags of `vision serve` or a YAML file)."""

    ae_title: str = "VISION"
    host: str = "127.0.0.1"
    port: int = 11112
    destinations: tuple[Destination, ...] = ()
    # Calling AE titles allowed to associate; empty: any.
    allowed_calling_aes: tuple[str, ...] = ()
    # Associations are refused while the state folder's disk has less free space than this.
    min_free_disk_mb: int = 500
    # Spool, job and outbox databases live here.
    state_dir: Path = Path("dicom-node")
    # A series is complete after this many seconds without a new instance ...
    series_idle_s: float = 10.0
    # ... or this many for a given calling AE (archives that send in bursts need more).
    idle_by_calling_ae: dict[str, float] = field(default_factory=dict)
    # ... or when the association that sent it is released.
    complete_on_release: bool = True
    # Routing rules (YAML); None: the bundled rules.
    rules_file: Path | None = None
    # Also send Grad-CAM heat maps (FRACTIONAL SEG) for models with an explain graph.
    heatmaps: bool = False
    # Outbox: retries of temporary failures, with exponential back-off capped at this.
    max_retry_delay_s: float = 300.0
    # De-identify results (PS3.15 Basic Profile, vision.deid) before they are queued to send.
    deid: bool = False
    # Its key (32 random bytes, created 0600 when absent); None: state_dir / "deid.key".
    deid_key_file: Path | None = None

    def idle_for(self, calling_ae: str) -> float:
        """Seconds of silence after which a series from `calling_ae` is complete."""
        return self.idle_by_calling_ae.get(calling_ae, self.series_idle_s)


@dataclass(frozen=True)
class SpooledInstance:
    """A received instance, safely on disk (fsynced) before its C-STORE was acknowledged."""

    path: Path
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    calling_ae: str
    received_at: float
    transfer_syntax: str = ""


@dataclass
class Series:
    """The instances of one series from one calling AE, complete and ready to route.

    `run` counts the times this series was processed: a late instance of a series already
    processed starts run 1 (then 2, ...) with every instance received so far, never a partial one.
    """

    study_uid: str
    series_uid: str
    calling_ae: str
    instances: list[SpooledInstance] = field(default_factory=list)
    run: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies the series: calling AE, study, series."""
        return (self.calling_ae, self.study_uid, self.series_uid)


@dataclass(frozen=True)
class Route:
    """The rule a series matched and the models it sends the series to."""

    rule: str
    models: tuple[str, ...]
    reasons: tuple[str, ...] = ()


class JobState(enum.StrEnum):
    """Where a job (one series through one model) stands."""

    RECEIVED = "received"
    INFERRED = "inferred"
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    SET_ASIDE = "set_aside"  # no routing rule matched
