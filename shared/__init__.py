"""ml-connector: ERP events that need a person become SMS, calls and Slack cards."""

__version__ = "0.1.0"
