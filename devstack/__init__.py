"""Local development and CI infrastructure for ordermesh: the ``ordermesh`` operator command.

Installs, starts, health-checks and stops real servers (PostgreSQL, Redis, Kafka in KRaft
mode, Envoy) bound to 127.0.0.1, and the ordermesh processes themselves. Every daemon runs in
its own session with a pid file under ``.run/pids`` and a log under ``.run/logs``, so ``down``
stops exactly what ``up`` started and ``up`` can be re-run safely. It renders the Envoy config
with PyYAML and reads the contexts and the messaging registry for what to start; ``status``
imports the messaging package (Kafka and Postgres clients), never a service.
"""
