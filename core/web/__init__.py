"""The branch web: the status page, the client-manager console, the third-party query API, and the
logins and roles in front of them.  ``vipsense run`` serves it (cheroot) when the profile has
``web:``; :func:`vipsense.web.app.create_app` builds the Flask application.

This package's ``__init__`` imports nothing from Flask, so profiles validate without the web stack: it
only declares the profile's ``web:`` section (:mod:`vipsense.config.sections`).
"""

from ..config.sections import register
from .settings import WebSettings, check_web

register("web", WebSettings, check_web)  # the profile's ``web:`` section
