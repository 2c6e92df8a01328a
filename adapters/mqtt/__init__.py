"""MQTT event bus, on aiomqtt 2.x, enabled by `[mqtt] url`.

    config.py      `[mqtt]` → frozen MqttConfig (key-path errors, secrets by env/file)
    connection.py  MqttConnection: one client, reconnect with capped jittered backoff,
                   re-subscribe, persistent session, PUBACK-confirmed publish, health()
    relay.py       OutboxRelay: outbox → `dialgate/v1/<creditor>/events/<type>`, QoS 1,
                   mark sent after PUBACK, per-case order, notify + slow poll
    consumer.py    InboundConsumer: dial commands (v5 response topic / v3.1.1 reply_to)
                   and PBX events; anything bad → `dialgate/v1/deadletter`, never fatal
    bus.py         MqttEventBus: the three together as one async context manager
    bridge.py      open_mqtt(services): the bus wired to the gate's use cases (extension):
                   dial commands → RequestDial, PBX events → dialer/attempt_state.py
    ports.py       EventPublisher, DialCommandHandler, PbxEventHandler; OutboxSource and
                   RelayStore (what the relay needs of the store) from dialer/outbox.py
    errors.py      the exception tree; topics.py, events.py, backoff.py (masking: dialer/masking.py)

Payloads are documented as JSON Schemas in schemas/events/ (README there). The package
imports no other adapter and no HTTP code: the store is reached through `RelayStore`.
"""
