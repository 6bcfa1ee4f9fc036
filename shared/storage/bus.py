"""Queues between stages, behind one small interface with two backends.

- Service Bus (Azure): MessageId = idempotency key, so the broker's duplicate
  detection filters repeats; delays are scheduled messages.
- Azure Storage queues (local runs on Azurite): delays are visibility timeouts.

Either way a message that the code refuses (unreadable, unknown type, out of
attempts) is dead-lettered explicitly to ``<queue>-poison`` with its reason, the
same queue the Functions host uses for storage-queue poison messages, so an
operator finds refused work in one place whatever the backend.

Payloads travel sealed (``shared.model.seal_payload``): only the fields that route the
work are readable on a queue or in a dead letter; recipients and texts are not.

Every call has a bounded timeout and few retries: an HTTP trigger that enqueues must
answer within seconds whatever storage or the broker does (Dynamics gives up after 10 s).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shared.model import Envelope
from shared.outcomes import PermanentFailure
from shared.settings import ServiceBusSettings, StorageSettings, queue_backend
from shared.storage.protect import LazyProtector

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch

log = logging.getLogger(__name__)

POISON_SUFFIX = "-poison"
# Storage queues hide a message for at most 7 days; Service Bus schedules further ahead,
# but no retry in this app waits that long.
MAX_DELAY_SECONDS = 7 * 24 * 3600
SERVICEBUS_MESSAGE_ID_MAX = 128


# One protector for every message this process sends or reads.
_protector = LazyProtector()
# Per try, and tries: the SDKs' defaults (minutes of retries) would hold an HTTP trigger's
# answer far past the 5 s it has when storage or the broker is down.
SEND_TIMEOUT_SECONDS = 1.5
SEND_RETRIES = 1
# How long a dead letter taken for collection stays hidden from another collector.
TAKE_VISIBILITY_SECONDS = 120
# Storage queues have no batch put: ``send_many`` sends this many at once, each sending thread on a
# connection of its own that it keeps for its next sends.
SEND_MANY_THREADS = 8
# What storage answers a put to a queue that does not exist (x-ms-error-code).
QUEUE_NOT_FOUND = "QueueNotFound"
# What a scheduled message's handle starts with, per backend: a handle of one is never tried on the other.
STORAGE_HANDLE, SERVICEBUS_HANDLE = "storage:", "servicebus:"


def message_text(envelope: Envelope) -> str:
    """The envelope as it travels: JSON with its payload sealed."""
    return envelope.to_json(seal=_protector.seal)


def read_envelope(body: str | bytes) -> Envelope:
    """A message as a consumer reads it: parsed, and its sealed payload opened."""
    return Envelope.from_json(body, unseal=_protector.unseal)


def poison_queue(queue: str) -> str:
    return f"{queue}{POISON_SUFFIX}"


def message_id_for(key: str) -> str:
    """Service Bus MessageIds hold 128 characters; longer keys are hashed, stably."""
    if len(key) <= SERVICEBUS_MESSAGE_ID_MAX:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def dead_letter_body(queue: str, body: str | bytes, reason: str, now: datetime | None = None) -> str:
    """What lands in the poison queue: the original message, untouched, and why."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    return json.dumps(
        {
            "dead_letter_reason": reason,
            "dead_lettered_at": (now or datetime.now(UTC)).isoformat(),
            "source_queue": queue,
            "body": text,
        },
        ensure_ascii=False,
    )


@dataclass(frozen=True)
class TakenDeadLetter:
    """One message taken from a dead-letter queue: its text, where it came from, ``settle``, which
    removes it from there once it is safely kept elsewhere, and ``release``, which puts it back."""

    text: str
    source_queue: str
    origin: str  # "app": dead-lettered by the consumer with its reason; "host": by the host or broker
    enqueued_at: datetime | None
    settle: Callable[[], None]
    release: Callable[[], None]
    reason: str = ""


def _decode_poison(content: str) -> str:
    """A storage poison message's text: base64 as the host and this bus write it, else as it is."""
    try:
        return base64.b64decode(content, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return content


def _taken(text: str, queue: str, enqueued_at: datetime | None, settle: Callable[[], None],
           release: Callable[[], None], broker_reason: str = "") -> TakenDeadLetter:
    """What a dead-letter queue held: the app's wrapper (original body and reason), or a message
    the host or broker parked as it was."""
    try:
        wrapper = json.loads(text)
    except ValueError:
        wrapper = None
    if isinstance(wrapper, dict) and isinstance(wrapper.get("body"), str) and "dead_letter_reason" in wrapper:
        return TakenDeadLetter(wrapper["body"], str(wrapper.get("source_queue") or queue), "app", enqueued_at,
                               settle, release, str(wrapper["dead_letter_reason"]))
    reason = broker_reason or "the host gave up on it after its allowed deliveries (a crash or a timeout)"
    return TakenDeadLetter(text, queue, "host", enqueued_at, settle, release, reason)


class MessageBus(Protocol):
    def send(self, queue: str, envelope: Envelope, delay_seconds: float = 0) -> None: ...

    def schedule(self, queue: str, envelope: Envelope, delay_seconds: float) -> str:
        """``send`` with a delay, answering a handle that ``cancel`` takes while the message still waits."""
        ...

    def cancel(self, queue: str, handle: str) -> bool:
        """Remove a message ``schedule`` put on ``queue`` before it comes due. False (logged at debug) when
        that could not be done: already due or taken, cancelled before, an unreadable handle, the queue
        unreachable; the message then runs as it would have."""
        ...

    def send_many(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        """Every envelope onto ``queue`` now, each as ``send`` would put it; returns once all are on it,
        raises if any is not (some of the others may be: resending them all is safe, keys dedup)."""
        ...

    def dead_letter(self, queue: str, body: str | bytes, reason: str) -> None: ...

    def take_dead_letters(self, queue: str, limit: int) -> Iterator[TakenDeadLetter]: ...

    def close(self) -> None: ...


def _clamp_delay(delay_seconds: float) -> int:
    return int(min(max(delay_seconds, 0), MAX_DELAY_SECONDS) + 0.999)


class StorageQueueBus:
    """Azure Storage queues, base64-encoded as the Functions host reads them by default."""

    def __init__(self, settings: StorageSettings) -> None:
        from shared.storage.transport import storage_client_options, storage_endpoint, without_async_transport

        with without_async_transport():  # a cold instance's first enqueue need not import aiohttp
            from azure.storage.queue import LinearRetry, QueueServiceClient

        # The storage SDK's default waits 15 s between tries; one quick retry is all an edge can afford.
        retry = LinearRetry(backoff=0, retry_total=SEND_RETRIES, random_jitter_range=0)
        bounded = storage_client_options(storage_endpoint(settings, "queue"), retry_policy=retry,
                                         connection_timeout=SEND_TIMEOUT_SECONDS, read_timeout=SEND_TIMEOUT_SECONDS)
        if settings.connection_string:
            self._service = QueueServiceClient.from_connection_string(settings.connection_string, **bounded)
        else:
            from azure.identity import DefaultAzureCredential

            if not settings.queue_service_uri:
                raise ValueError("AzureWebJobsStorage__queueServiceUri or __accountName is needed for queues")
            credential = DefaultAzureCredential(managed_identity_client_id=settings.client_id)
            self._service = QueueServiceClient(settings.queue_service_uri, credential=credential, **bounded)
        self._clients: dict[str, Any] = {}
        self._existing: set[str] = set()  # queues this process has put to or created
        self._lock = threading.Lock()
        self._senders: ThreadPoolExecutor | None = None

    def _client(self, name: str) -> Any:
        """The client of queue ``name``, built once; the queue itself is not asked for."""
        client = self._clients.get(name)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = self._clients[name] = self._service.get_queue_client(name)
        return client

    def _queue(self, name: str) -> Any:
        """The client of queue ``name``, the queue created first unless this process knows it exists."""
        client = self._client(name)
        if name not in self._existing:
            self._create(name, client)
        return client

    def _create(self, name: str, client: Any) -> None:
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
        self._existing.add(name)

    def send_text(self, queue: str, text: str, delay_seconds: float = 0) -> Any:
        """One put, answering the queued message (its id and pop receipt). The queue is created only when
        the put finds none (a put answered QueueNotFound left nothing behind, so putting again cannot make a
        duplicate): a process's first enqueue is one round trip, not a create and a put."""
        from azure.core.exceptions import ResourceNotFoundError

        encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
        visibility = _clamp_delay(delay_seconds) or None
        client = self._client(queue)
        try:
            sent = client.send_message(encoded, visibility_timeout=visibility)
        except ResourceNotFoundError as missing:
            if getattr(missing, "error_code", None) != QUEUE_NOT_FOUND:
                raise
            self._create(queue, client)
            sent = client.send_message(encoded, visibility_timeout=visibility)
        self._existing.add(queue)
        return sent

    def send(self, queue: str, envelope: Envelope, delay_seconds: float = 0) -> None:
        self.send_text(queue, message_text(envelope), delay_seconds)

    def schedule(self, queue: str, envelope: Envelope, delay_seconds: float) -> str:
        """The put's message id and pop receipt: that receipt deletes the message while it is still hidden;
        once a consumer has taken it, the message has a receipt of its own and this one no longer works."""
        sent = self.send_text(queue, message_text(envelope), delay_seconds)
        return f"{STORAGE_HANDLE}{sent.id}|{sent.pop_receipt}"

    def cancel(self, queue: str, handle: str) -> bool:
        from azure.core.exceptions import AzureError

        message_id, _, pop_receipt = handle.removeprefix(STORAGE_HANDLE).partition("|")
        if not handle.startswith(STORAGE_HANDLE) or not message_id or not pop_receipt:
            log.debug("not a storage queue message handle: %.40s", handle)
            return False
        try:
            self._client(queue).delete_message(message_id, pop_receipt)
        except AzureError as error:  # gone, taken (its receipt changed) or storage unreachable: it runs then
            log.debug("scheduled message %s on %s not cancelled: %s", message_id, queue, type(error).__name__)
            return False
        return True

    def send_many(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        """Concurrent puts through a small pool; returns (or raises the first failure) only once none is
        still in flight, so a caller that retries never races its own earlier puts."""
        from concurrent.futures import FIRST_EXCEPTION, wait

        if not envelopes:
            return
        self._queue(queue)  # created (and its transport opened) once, before the pool's threads share it
        pool = self._send_pool()
        sends = [pool.submit(self.send_text, queue, message_text(envelope)) for envelope in envelopes]
        _, pending = wait(sends, return_when=FIRST_EXCEPTION)
        for send in pending:
            send.cancel()  # one failed: the page will be sent again, so the rest need not go now
        wait(pending)
        _raise_first_failure(sends)

    def _send_pool(self) -> ThreadPoolExecutor:
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            if self._senders is None:
                self._senders = ThreadPoolExecutor(SEND_MANY_THREADS, thread_name_prefix="queue-send")
            return self._senders

    def dead_letter(self, queue: str, body: str | bytes, reason: str) -> None:
        self.send_text(poison_queue(queue), dead_letter_body(queue, body, reason))
        log.warning("dead-lettered a message from %s: %s", queue, reason)

    def take_dead_letters(self, queue: str, limit: int) -> Iterator[TakenDeadLetter]:
        """The messages of ``<queue>-poison``, hidden while taken; each gone once settled."""
        client = self._queue(poison_queue(queue))
        for message in client.receive_messages(messages_per_page=32, max_messages=limit,
                                               visibility_timeout=TAKE_VISIBILITY_SECONDS):
            text = _decode_poison(message.content or "")

            def settle(message: Any = message) -> None:
                client.delete_message(message)

            def release(message: Any = message) -> None:
                client.update_message(message, visibility_timeout=0)

            yield _taken(text, queue, message.inserted_on, settle, release)

    def depth(self, queue: str) -> tuple[int | None, int | None]:
        """Approximate messages waiting on ``queue`` and on its poison queue (one properties read each);
        0 for a queue not made yet, None when storage did not say."""
        return self._approximate_count(queue), self._approximate_count(poison_queue(queue))

    def _approximate_count(self, name: str) -> int | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return int(self._client(name).get_queue_properties().approximate_message_count or 0)
        except ResourceNotFoundError:
            return 0
        except AzureError as error:
            log.warning("could not read the depth of %s: %s", name, error)
            return None

    def close(self) -> None:
        if self._senders is not None:
            self._senders.shutdown(wait=True)
        for client in self._clients.values():
            client.close()
        self._service.close()


def _raise_first_failure(sends: Sequence[Future[None]]) -> None:
    for send in sends:
        failure = None if send.cancelled() else send.exception()
        if failure is not None:
            raise failure


def servicebus_message_id(envelope: Envelope) -> str:
    """The key for the first attempt, so the broker drops repeats of the same work; each later
    attempt gets one of its own, or duplicate detection would drop the retry itself."""
    key = envelope.key if envelope.attempt == 0 else f"{envelope.key}#attempt-{envelope.attempt}"
    if envelope.deferrals:
        key += f"#deferral-{envelope.deferrals}"
    if envelope.redrives:
        key += f"#redrive-{envelope.redrives}"
    return message_id_for(key)


def servicebus_message(envelope: Envelope, delay_seconds: float = 0, now: datetime | None = None) -> ServiceBusMessage:
    """The Service Bus message for an envelope: MessageId from the key, scheduled when delayed."""
    from azure.servicebus import ServiceBusMessage

    scheduled = None
    if delay_seconds > 0:
        scheduled = (now or datetime.now(UTC)) + timedelta(seconds=_clamp_delay(delay_seconds))
    message = ServiceBusMessage(
        message_text(envelope),
        message_id=servicebus_message_id(envelope),
        correlation_id=envelope.correlation_id,
        subject=envelope.type,
        content_type="application/json",
        application_properties={
            "type": envelope.type,
            "version": envelope.version,
            "connection": envelope.connection,
            "attempt": envelope.attempt,
        },
    )
    if scheduled is not None:
        message.scheduled_enqueue_time_utc = scheduled
    return message


def servicebus_batches(envelopes: Sequence[Envelope],
                       new_batch: Callable[[], ServiceBusMessageBatch]) -> Iterator[ServiceBusMessageBatch]:
    """The envelopes' messages (as ``servicebus_message`` makes them) in full batches, in order: a new
    batch is begun when the next message does not fit. Each batch is yielded before the next is filled."""
    from azure.servicebus.exceptions import MessageSizeExceededError

    batch = new_batch()
    for envelope in envelopes:
        message = servicebus_message(envelope)
        try:
            batch.add_message(message)
            continue
        except MessageSizeExceededError:
            if len(batch) == 0:
                raise _too_large(message) from None
        yield batch
        batch = new_batch()
        try:
            batch.add_message(message)
        except MessageSizeExceededError:
            raise _too_large(message) from None
    if len(batch):
        yield batch


def _too_large(message: ServiceBusMessage) -> PermanentFailure:
    # The MessageId is the envelope key (connection, entity, record key, stamp): no personal data.
    return PermanentFailure(f"message {message.message_id} is larger than a Service Bus batch may be")


class ServiceBusBus:
    """Azure Service Bus queues (azure-servicebus), one cached sender per queue."""

    def __init__(self, settings: ServiceBusSettings) -> None:
        from azure.servicebus import ServiceBusClient

        bounded: dict[str, Any] = {"retry_total": SEND_RETRIES, "retry_backoff_factor": 0.2, "retry_backoff_max": 1.0}
        if settings.connection_string:
            self._client = ServiceBusClient.from_connection_string(settings.connection_string, **bounded)
        else:
            from azure.identity import DefaultAzureCredential

            if not settings.namespace:  # ServiceBusSettings.from_env sets one whenever there is no connection string
                raise ValueError("ServiceBusConnection__fullyQualifiedNamespace is needed for Service Bus")
            credential = DefaultAzureCredential(managed_identity_client_id=settings.client_id)
            self._client = ServiceBusClient(settings.namespace, credential, **bounded)
        self._senders: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._settings = settings
        self._admin: Any = None

    def _sender(self, queue: str) -> Any:
        with self._lock:
            sender = self._senders.get(queue)
            if sender is None:
                sender = self._senders[queue] = self._client.get_queue_sender(queue)
            return sender

    def send(self, queue: str, envelope: Envelope, delay_seconds: float = 0) -> None:
        self._sender(queue).send_messages(servicebus_message(envelope, delay_seconds), timeout=SEND_TIMEOUT_SECONDS)

    def schedule(self, queue: str, envelope: Envelope, delay_seconds: float) -> str:
        """A scheduled message; its sequence number is the handle ``cancel_scheduled_messages`` takes."""
        message = servicebus_message(envelope, delay_seconds)
        due = message.scheduled_enqueue_time_utc or datetime.now(UTC)
        [sequence_number] = self._sender(queue).schedule_messages(message, due, timeout=SEND_TIMEOUT_SECONDS)
        return f"{SERVICEBUS_HANDLE}{sequence_number}"

    def cancel(self, queue: str, handle: str) -> bool:
        from azure.core.exceptions import AzureError  # ServiceBusError is one

        number = handle.removeprefix(SERVICEBUS_HANDLE)
        if not handle.startswith(SERVICEBUS_HANDLE) or not number.isdigit():
            log.debug("not a Service Bus scheduled message handle: %.40s", handle)
            return False
        try:
            self._sender(queue).cancel_scheduled_messages(int(number), timeout=SEND_TIMEOUT_SECONDS)
        except AzureError as error:  # enqueued already, cancelled before, or the bus down
            log.debug("scheduled message %s on %s not cancelled: %s", number, queue, type(error).__name__)
            return False
        return True

    def send_many(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        """One ``ServiceBusMessageBatch`` send per batch the sender's link allows; a batch sent again after a
        failure is dropped by duplicate detection, since every MessageId is its envelope's key."""
        if not envelopes:
            return
        sender = self._sender(queue)
        for batch in servicebus_batches(envelopes, sender.create_message_batch):
            sender.send_messages(batch, timeout=SEND_TIMEOUT_SECONDS)

    def take_dead_letters(self, queue: str, limit: int) -> Iterator[TakenDeadLetter]:
        """The app's dead letters (``<queue>-poison``), then the broker's (the queue's dead-letter
        sub-queue: the host's give-ups after maxDeliveryCount), each gone once settled."""
        from azure.servicebus import ServiceBusSubQueue

        sources = ((poison_queue(queue), None), (queue, ServiceBusSubQueue.DEAD_LETTER))
        taken = 0
        for name, sub_queue in sources:
            with self._client.get_queue_receiver(name, sub_queue=sub_queue, max_wait_time=0.5) as receiver:
                while taken < limit:
                    batch = receiver.receive_messages(max_message_count=min(32, limit - taken), max_wait_time=0.5)
                    if not batch:
                        break
                    for message in batch:
                        taken += 1
                        text = b"".join(message.body).decode("utf-8", errors="replace")
                        reason = (message.dead_letter_reason or "") if sub_queue else ""

                        def settle(message: Any = message, receiver: Any = receiver) -> None:
                            receiver.complete_message(message)

                        def release(message: Any = message, receiver: Any = receiver) -> None:
                            receiver.abandon_message(message)

                        yield _taken(text, queue, message.enqueued_time_utc, settle, release, reason)

    def dead_letter(self, queue: str, body: str | bytes, reason: str) -> None:
        from azure.servicebus import ServiceBusMessage

        message = ServiceBusMessage(
            dead_letter_body(queue, body, reason),
            content_type="application/json",
            application_properties={"dead_letter_reason": reason[:1024], "source_queue": queue},
        )
        self._sender(poison_queue(queue)).send_messages(message)
        log.warning("dead-lettered a message from %s: %s", queue, reason)

    def depth(self, queue: str) -> tuple[int | None, int | None]:
        """Active messages of ``queue``, and those of its poison queue plus its own dead-letter sub-queue,
        from the runtime properties (they need the Manage right); None where they could not be read."""
        from azure.core.exceptions import AzureError

        try:
            waiting = self._admin_client().get_queue_runtime_properties(queue)
            poison = self._admin_client().get_queue_runtime_properties(poison_queue(queue))
        except (AzureError, ValueError) as error:
            log.warning("could not read the depth of %s: %s", queue, error)
            return None, None
        return waiting.active_message_count, poison.active_message_count + waiting.dead_letter_message_count

    def _admin_client(self) -> Any:
        if self._admin is None:
            from azure.servicebus.management import ServiceBusAdministrationClient

            settings = self._settings
            if settings.connection_string:
                self._admin = ServiceBusAdministrationClient.from_connection_string(settings.connection_string)
            else:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential(managed_identity_client_id=settings.client_id)
                self._admin = ServiceBusAdministrationClient(str(settings.namespace), credential)
        return self._admin

    def close(self) -> None:
        for sender in self._senders.values():
            sender.close()
        if self._admin is not None:
            self._admin.close()
        self._client.close()


_bus: MessageBus | None = None
_bus_lock = threading.Lock()


def get_bus() -> MessageBus:
    """The process-wide bus for the backend that QUEUE_BACKEND selects, built on first use."""
    global _bus
    if _bus is None:
        with _bus_lock:
            if _bus is None:
                if queue_backend() == "storage":
                    _bus = StorageQueueBus(StorageSettings.from_env())
                else:
                    _bus = ServiceBusBus(ServiceBusSettings.from_env())
    return _bus


def reset_bus() -> None:
    """Forget the process-wide bus (settings changed, or a test starts afresh)."""
    global _bus
    with _bus_lock:
        if _bus is not None:
            _bus.close()
        _bus = None
