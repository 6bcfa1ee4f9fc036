"""The queue consumers, written once and registered for the backend that settings select.

``QUEUE_BACKEND=servicebus`` (Azure, default): Service Bus queue triggers on the
``ServiceBusConnection`` setting. ``QUEUE_BACKEND=storage`` (local runs on Azurite):
storage queue triggers on ``AzureWebJobsStorage``. The choice is read when the app is
indexed, as the host reads every binding.
"""

from __future__ import annotations

import azure.functions as func

from shared.model import QUEUES
from shared.settings import SERVICEBUS_SETTING, STORAGE_SETTING, queue_backend
from shared.telemetry import invocation

bp = func.Blueprint()


def _consume(queue: str, body: bytes, message_id: str, delivery_count: int) -> None:
    from shared.pipeline.consume import Delivery, consume
    from shared.storage.bus import get_bus

    with invocation(function_name_for(queue)):
        consume(Delivery(queue, body, message_id, delivery_count), get_bus())


def function_name_for(queue: str) -> str:
    return "consume_" + queue.replace("-", "_")


def _register_servicebus(queue: str) -> None:
    @bp.function_name(function_name_for(queue))
    @bp.service_bus_queue_trigger(arg_name="msg", queue_name=queue, connection=SERVICEBUS_SETTING)
    def consume_servicebus(msg: func.ServiceBusMessage) -> None:
        _consume(queue, msg.get_body(), msg.message_id, msg.delivery_count or 1)


def _register_storage(queue: str) -> None:
    @bp.function_name(function_name_for(queue))
    @bp.queue_trigger(arg_name="msg", queue_name=queue, connection=STORAGE_SETTING)
    def consume_storage(msg: func.QueueMessage) -> None:
        _consume(queue, msg.get_body(), msg.id or "", msg.dequeue_count or 1)


_register = _register_servicebus if queue_backend() == "servicebus" else _register_storage
for _queue in QUEUES:
    _register(_queue)
