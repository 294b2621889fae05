"""Kafka event bus of ordermesh: Avro codec, outbox writer and relay, consumer loop with inbox.

Topic and group names live in :mod:`workers.topics`; nothing here connects at import time.
"""
