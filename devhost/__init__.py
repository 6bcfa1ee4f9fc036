"""Local host for ml-connector: runs function_app without Functions Core Tools."""
