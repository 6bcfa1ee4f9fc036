"""Connections and routing rules: one JSON file, validated once at load into frozen types.

- ``model``: what a loaded configuration is (``AppConfig``, ``Rule``, the ``Connection`` base);
- ``fields``: the parser kit each kind's settings are written with;
- ``rules``: routing rules and templates, checked against the connections they name;
- ``loading``: reading the file (``get_config``), every problem collected in one ``ConfigError``;
- ``schema``: the JSON Schema of the file, generated from the same declarations.

A connection is one ERP (dynamics, syspro, sagex3, qad) or one channel account (twilio,
slack, sendgrid); each kind declares its settings in its own folder (``shared/erp/<kind>/
connection.py``, ``shared/channels/<kind>/connection.py``), and ``shared.kinds`` lists them.
A rule says: when this ERP connection reports this event and these conditions hold, send
this template over this channel to these recipients.

Validation collects every error of a file, each naming the field path and the reason,
so one run of the loader shows everything to fix. Secrets are never in the file, only
their names (``{"secret": "<name>"}``), read later through ``shared.storage.secrets``.
Nothing is read at import: ``get_config()`` loads the file on first use.
"""
