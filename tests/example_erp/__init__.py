"""A small polled ERP kind used only by the tests: the shape of ``shared/erp/<kind>/`` for a new ERP.

``connection.py`` declares the settings, ``client.py`` speaks the ERP's HTTP API, ``adapter.py``
meets ``shared.erp.polling.ErpAdapter`` (and writes notes). Listing it is one ``ErpKind`` line in
``shared.kinds.ERPS``; the tests add that line for themselves (``tests/integration/test_example_kind.py``).
"""
