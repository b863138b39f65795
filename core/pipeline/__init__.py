"""The pipeline: a read becomes an arrival (presence), is judged (policy), found (lookup),
routed to staff (routing, escalation) and timed (response_times).  Empty on purpose: config imports
``vipsense.pipeline.policy``, which must stay light."""
