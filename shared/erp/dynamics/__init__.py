"""Dynamics 365 Finance and Operations: Business Events pushed over HTTPS, records read over OData."""
