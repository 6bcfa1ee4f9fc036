"""ml-connector Function App: wiring only. Logic lives in the ``shared`` package."""

import azure.functions as func

from shared.logs import install_redaction, quiet_library_loggers
from shared.triggers import dynamics, health, ops, queues, sendgrid, slack, timers, twilio

# Log export to Application Insights starts on the first invocation (shared/telemetry.py), not
# here: this import is the cold start.
install_redaction()
quiet_library_loggers()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (health.bp, ops.bp, dynamics.bp, twilio.bp, slack.bp, sendgrid.bp, timers.bp, queues.bp):
    app.register_functions(blueprint)
