"""The VIP service centre (客服中心): head office's one place over every branch.

A branch keeps its own files (visit log, outbox, audit log) and greets customers without the
centre; the centre holds what head office needs across branches: customers and their cards, each
branch's visits, deliveries and acknowledgements, card sightings, device status and its own audit
log.  Its database is PostgreSQL in production and SQLite as the embedded default (a demo, a
one-branch bank), through one SQLAlchemy Core query layer (:mod:`vipsense.centre.database`), with
one schema (:mod:`vipsense.centre.schema`) brought up to date by :mod:`vipsense.centre.migrations`.
"""
