"""SYSPRO: tables polled through e.net Solutions (COMFND) or the OData service; notes written through e.net."""
