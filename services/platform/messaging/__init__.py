"""The event plumbing of ordermesh: the Avro codec and CloudEvents envelope, the outbox
writer, the relay and its parked rows, the consumer loop with its inbox, dead letters, the
producer settings, topic administration, retention, worker state, the operator's inspection,
and the one registry of topics, consumer groups and outboxes (:mod:`.registry`).

It imports no service: bounded contexts import it, and workers/ composes the two.
"""
