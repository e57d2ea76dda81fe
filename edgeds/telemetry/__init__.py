"""Telemetry over MQTT: spool, metrics, publisher, embedded broker.

Modules: ``envelope`` (message format, topics), ``spool`` (SQLite WAL, bounded, at-least-once),
``metrics`` (host, inference, deploy state, tegrastats, Prometheus text), ``mqtt`` (the only
module importing paho), ``publisher`` (:class:`~edgeds.telemetry.publisher.TelemetryPublisher`,
what the agent embeds), ``broker`` (the embedded amqtt broker), ``view`` (consumer side: fleet
rows, dedupe, CSV flattening), ``watch`` (the live fleet view of ``edgeds monitor``),
``export`` (captures and live subscriptions to JSONL/CSV), ``run`` (a telemetry-only process:
``python -m edgeds.telemetry.run``). Import the submodule you need; this package imports nothing
heavy.
"""
