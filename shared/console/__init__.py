"""The operator console: a static page served by the app, and the reads behind its views."""
