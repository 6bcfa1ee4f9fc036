"""What a cold instance's first request imports: the app's clients are synchronous, so building
them leaves out the async transport (aiohttp), which would cost the first request about 110 ms."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

BUILD_CLIENTS = """
import json, sys
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus
from shared.storage.tables import Tables

settings = StorageSettings("UseDevelopmentStorage=true", None, None, None)
StorageQueueBus(settings), Tables(settings)
after_build = "aiohttp" in sys.modules
import azure.core.pipeline.transport._aiohttp  # code that needs the async transport still gets it
print(json.dumps({"after_build": after_build, "later": "aiohttp" in sys.modules}))
"""


def test_building_the_queue_and_table_clients_does_not_import_aiohttp() -> None:
    out = subprocess.run([sys.executable, "-c", BUILD_CLIENTS], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True, timeout=60)
    imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert imported == {"after_build": False, "later": True}


BUILD_BUS = """
import json, sys
from shared.settings import StorageSettings
from shared.storage.bus import StorageQueueBus

StorageQueueBus(StorageSettings("UseDevelopmentStorage=true", None, None, None))
after_build = "yarl" in sys.modules
import yarl  # code that needs it still gets it
print(json.dumps({"after_build": after_build, "later": "yarl" in sys.modules and yarl.URL is not None}))
"""


def test_building_the_queue_bus_does_not_import_yarl() -> None:
    # The queue SDK's request signing uses yarl only with the async transport that it sees as missing.
    out = subprocess.run([sys.executable, "-c", BUILD_BUS], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True, timeout=60)
    imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert imported == {"after_build": False, "later": True}
