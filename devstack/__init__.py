"""Local development and CI infrastructure for ordermesh.

Installs, starts, health-checks and stops real servers (PostgreSQL, Redis,
Kafka in KRaft mode, Envoy) bound to 127.0.0.1. Every daemon runs in its own
session with a pid file under ``.run/pids`` and a log under ``.run/logs``, so
``down`` stops exactly what ``up`` started and ``up`` can be re-run safely.
Standard library only.
"""
