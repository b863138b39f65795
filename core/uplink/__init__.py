"""The branch's side of reporting to the VIP service centre (issue 14, part 3): the profile's
``centre:`` section, the change feeds it reads, the signed batch and the shipper thread.

This package's ``__init__`` imports nothing of HTTP, so profiles validate without the transport: it
only declares the profile's ``centre:`` section (:mod:`vipsense.config.sections`).
"""

from ..config.sections import register
from .settings import CentreLink, check_centre

register("centre", CentreLink, check_centre)  # the profile's ``centre:`` section
