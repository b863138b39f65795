"""The branch's own files: the write-ahead file, migrations, the visit log, the outbox, the audit log
and its anchors, and retention."""
