"""Sage X3: records polled through Syracuse REST or GraphQL; notes written through the SOAP web services."""
