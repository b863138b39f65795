"""The branch profile's ``centre:`` section: where the branch reports, with which key, how often.

Kept free of HTTP so that ``vipsense check`` validates it without importing the transport.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from ..config.sections import SectionReport
from ..config.types import Duration, Secret
from ..i18n import _
from ..pluginhost import Kind

KEY_LENGTH = 32  #: characters a branch key has at least (``vipsense centre branches add`` makes 43)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: the only hosts plain ``http://`` may name."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(inst: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is None:
        return  # only with serve: (check_centre says so otherwise)
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(
            _("expected the centre's address, such as https://centre.bank:8470, got {value!r}").format(
                value=value
            )
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(
            _(
                "plain http:// is accepted only for a centre on this machine (127.0.0.1, localhost); "
                "use https:// for {host}"
            ).format(host=parts.hostname)
        )


def _key(inst: Any, attribute: attrs.Attribute, value: Secret | None) -> None:
    if value is None:
        return
    if len(value.reveal()) < KEY_LENGTH:
        raise ValueError(
            _(
                "a branch key has at least {n} characters; use the one 'vipsense centre branches add' printed"
            ).format(n=KEY_LENGTH)
        )


def _positive(inst: Any, attribute: attrs.Attribute, value: Duration) -> None:
    if float(value) <= 0:
        raise ValueError(_("must be longer than 0s"))


#: rows per stream in one request at most: two streams of 5,000 rows stay well inside the centre's 4 MiB
MAX_BATCH = 5_000


def _batch(inst: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 1 <= value <= MAX_BATCH:
        raise ValueError(_("must be 1 to {high}").format(high=MAX_BATCH))


@attrs.frozen
class CentreLink:
    """``centre:``: the branch ships its visits, deliveries and a heartbeat to the VIP service
    centre at ``url``, signed with ``key`` (``!secret``), every ``interval``."""

    #: the centre's address; with ``serve:`` the centre served beside the branch (left out)
    url: str | None = attrs.field(default=None, validator=_url)
    #: the branch's key (``!secret``); with ``serve:`` each run makes its own (left out)
    key: Secret | None = attrs.field(default=None, validator=_key, repr=False)
    interval: Duration = attrs.field(default=Duration(5), validator=_positive)
    #: rows per stream in one request; a backlog goes in requests of this size, oldest first
    batch: int = attrs.field(default=500, validator=_batch)
    #: the uplink type that carries the batches (``vipsense plugins``)
    transport: str = "https"
    timeout: Duration = attrs.field(default=Duration(10), validator=_positive)
    #: a PEM file of the CA that signed the centre's certificate (else the system's CAs)
    ca: str | None = None
    #: a centre profile that ``vipsense run`` serves beside the branch, in the same process, with a key
    #: made for each run (the demo: no server to install); None: the centre runs elsewhere
    serve: str | None = None

    def plugin_types(self) -> Iterator[tuple[tuple[str, ...], Kind, str]]:
        """The plugin type this section names, for the profile check (did-you-mean on a typo)."""
        yield ("transport",), Kind.UPLINK, self.transport


def check_centre(link: CentreLink, profile_dir: Path, report: SectionReport) -> None:
    """What ``centre:`` needs beyond its own fields: an address and a key, or ``serve:`` and neither;
    the files it names exist."""
    if link.serve is None:
        for key, what in (
            ("url", _("the centre's address, such as https://centre.bank:8470")),
            ("key", _("the branch's key: key: !secret centre_key")),
        ):
            if getattr(link, key) is None:
                report.error((key,), _("missing: {what}").format(what=what))
    else:
        for key in ("url", "key"):
            if getattr(link, key) is not None:
                report.error(
                    (key,),
                    _(
                        "leave out {key} with serve: the branch reports to the centre it serves, with a key "
                        "made for each run"
                    ).format(key=key),
                )
    for key in ("ca", "serve"):
        value = getattr(link, key)
        if value is not None and not resolve(profile_dir, value).is_file():
            report.error((key,), _("no such file: {file}").format(file=resolve(profile_dir, value)))


def resolve(profile_dir: Path, value: str) -> Path:
    """A path of the section, relative to the profile's directory."""
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else profile_dir / path


__all__ = ["KEY_LENGTH", "CentreLink", "check_centre", "is_loopback", "resolve"]
