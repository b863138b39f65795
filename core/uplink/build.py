"""Builds a running branch's shipper from its profile's ``centre:`` and the uplink type it names."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ..api import UplinkContext
from ..pluginhost import Kind, PluginHost
from ..status import BranchStatus
from .heartbeat import AuditHead, heartbeat
from .settings import CentreLink, resolve
from .shipper import Shipper

log = logging.getLogger(__name__)


def build_shipper(
    link: CentreLink,
    host: PluginHost,
    status: BranchStatus,
    branch_id: str,
    data_dir: Path,
    profile_dir: Path,
    audit_path: Path,
    tz: ZoneInfo | None = None,
) -> tuple[Shipper, AuditHead]:
    """The shipper (not started) and the audit-head reader it uses.  Raises what the uplink's factory
    raises; the profile check has made sure the type exists."""
    if link.url is None or link.key is None:  # serve: without vipsense run to serve it
        raise ValueError("no centre is served for centre.serve: only 'vipsense run' serves it")
    ptype = host.types[Kind.UPLINK][link.transport]
    context = UplinkContext(
        url=link.url,
        timeout=float(link.timeout),
        ca=resolve(profile_dir, link.ca) if link.ca else None,
        branch_id=branch_id,
        log=logging.getLogger(f"vipsense.uplink.{link.transport}"),
    )
    transport: Any = ptype.factory(ptype.settings(), context)
    head = AuditHead(audit_path)
    shipper = Shipper(
        link,
        transport,
        branch_id,
        data_dir,
        heartbeat(status, head),
        tz=tz,
        door_reads=lambda: status.counters["reads"],
    )
    return shipper, head


__all__ = ["build_shipper"]
