"""The VIP service centre's web (客服中心): the live board, search across branches, the ingest API the
branches report to, and the centre's audit page, served by ``vipsense centre serve``.

A layer above the branch web (:mod:`vipsense.web`): it reuses the branch web's logins, sessions,
CSRF, roles, account store, audit page, security headers and translations rather than copying them
(:mod:`.app`), and adds the centre's own blueprints.
"""
