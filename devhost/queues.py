"""Storage queue triggers with the host's polling, retry and poison-queue behaviour."""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.functions.queue import QueueMessage as FunctionQueueMessage

from devhost.cpu import hosting_cpu
from devhost.settings import QueueOptions

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient, QueueMessage

    from devhost.functions import HostedFunction

log = logging.getLogger("devhost.queues")

POISON_SUFFIX = "-poison"
# How long a received message stays hidden while its function runs (the host uses 10 minutes).
PROCESSING_INVISIBILITY_SECONDS = 300
# The first wait after an empty poll; it doubles up to maxPollingInterval, as the host's back-off does.
MIN_POLLING_INTERVAL = 0.1
# The poller backs off on its own; the SDK's default retries (minutes against a stopped
# Azurite) would only delay shutdown and the log line that says storage is unreachable.
SDK_RETRIES = 1
SDK_RETRY_BACKOFF_SECONDS = 0.5
SDK_CONNECTION_TIMEOUT_SECONDS = 3
# How often a poller waiting for running messages to settle looks whether the host is stopping.
STOP_CHECK_SECONDS = 0.1


def storage_connection_string(connection: str, env: Mapping[str, str]) -> str:
    """The connection string a trigger's ``connection`` names (``AzureWebJobs<name>`` is tried too)."""
    for name in (connection, f"AzureWebJobs{connection}"):
        value = (env.get(name) or "").strip()
        if value:
            return value
    raise KeyError(f"storage connection setting {connection!r} is not set (devhost needs a connection string)")


def decode_body(content: str, encoding: str) -> bytes:
    """The message body the function sees; raises ValueError for text that is not base64."""
    if encoding == "none":
        return content.encode("utf-8")
    try:
        return base64.b64decode("".join(content.split()), validate=True)
    except binascii.Error as error:
        raise ValueError(f"message is not valid base64: {error}") from None


def function_message(message: QueueMessage, body: bytes) -> FunctionQueueMessage:
    """The message as the worker hands it to the function (azure.functions.queue.QueueMessage)."""
    return FunctionQueueMessage(
        id=message.id,
        body=body,
        dequeue_count=message.dequeue_count,
        expiration_time=message.expires_on,
        insertion_time=message.inserted_on,
        time_next_visible=message.next_visible_on,
        pop_receipt=message.pop_receipt,
    )


def _dequeue_count(message: QueueMessage) -> int:
    """How often the message was received; the SDK types it optional, but a received message always has it."""
    return message.dequeue_count or 0


def _create_if_missing(client: QueueClient) -> None:
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()


class QueuePoller:
    """Polls one queue in its own thread and runs its messages concurrently, batchSize per fetch.

    As the host does, it fetches the next batch when the messages still running fall to
    newBatchThreshold, so at most batchSize + newBatchThreshold run at once.
    """

    def __init__(
        self,
        function: HostedFunction,
        queue_name: str,
        connection_string: str,
        options: QueueOptions,
        stop: threading.Event,
    ) -> None:
        self.function = function
        self.queue_name = queue_name
        self.poison_queue_name = queue_name + POISON_SUFFIX
        self.options = options
        self._connection_string = connection_string
        self._stop = stop
        self._queue: QueueClient | None = None
        self._poison: QueueClient | None = None
        self._poison_lock = threading.Lock()
        self._poison_ready = False
        self._unreachable = False
        # Messages received and not yet settled; the poll loop waits on it for newBatchThreshold.
        self._in_flight = 0
        self._in_flight_changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"devhost-queue-{function.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        from azure.storage.queue import LinearRetry, QueueServiceClient

        from shared.storage.transport import client_options

        endpoint = QueueServiceClient.from_connection_string(self._connection_string).url
        service = QueueServiceClient.from_connection_string(
            self._connection_string,
            retry_policy=LinearRetry(
                backoff=SDK_RETRY_BACKOFF_SECONDS,  # type: ignore[arg-type]  # typed int, but any number of seconds works
                retry_total=SDK_RETRIES, random_jitter_range=0,
            ),
            connection_timeout=SDK_CONNECTION_TIMEOUT_SECONDS,
            **client_options(endpoint),  # the environment read once, not on every poll
        )
        try:
            self._poll_until_stopped(service)
        finally:
            service.close()

    def _poll_until_stopped(self, service: Any) -> None:
        delay = MIN_POLLING_INTERVAL
        hosting_cpu.start_thread()
        try:
            while not self._stop.is_set():
                if not self._wait_for_new_batch_threshold():
                    break
                messages = self._receive(service)
                hosting_cpu.flush()
                if messages:
                    delay = MIN_POLLING_INTERVAL
                    self._start_all(messages)
                    continue
                self._stop.wait(delay)
                delay = min(delay * 2, max(self.options.max_polling_interval, MIN_POLLING_INTERVAL))
        finally:
            self._wait_until_all_settled()
            hosting_cpu.flush()

    def _wait_for_new_batch_threshold(self) -> bool:
        """As the host does: fetch again only once the messages still running are at most newBatchThreshold.

        False when the host stops meanwhile.
        """
        threshold = self.options.batch_threshold
        with self._in_flight_changed:
            while self._in_flight > threshold:
                if self._stop.is_set():
                    return False
                # Woken by each settled message; the timeout only lets a stop be seen.
                self._in_flight_changed.wait(STOP_CHECK_SECONDS)
        return not self._stop.is_set()

    def _wait_until_all_settled(self) -> None:
        # As before a stop: the messages received finish (their threads are daemons if one hangs).
        with self._in_flight_changed:
            while self._in_flight:
                self._in_flight_changed.wait()

    def _receive(self, service: Any) -> list[QueueMessage]:
        """Up to batchSize messages; an unreachable storage account counts as an empty poll."""
        try:
            if self._queue is None:
                queue = service.get_queue_client(self.queue_name)
                _create_if_missing(queue)
                self._queue = queue
                self._poison = service.get_queue_client(self.poison_queue_name)
            messages = list(
                self._queue.receive_messages(
                    max_messages=self.options.batch_size,
                    messages_per_page=self.options.batch_size,
                    visibility_timeout=PROCESSING_INVISIBILITY_SECONDS,
                )
            )
        except AzureError as error:
            # Said once per outage, not on every poll.
            if not self._unreachable:
                log.warning("Queue '%s': polling failed, retrying with back-off: %s", self.queue_name, error)
            self._unreachable = True
            return []
        if self._unreachable:
            log.info("Queue '%s': polling again", self.queue_name)
            self._unreachable = False
        if messages:
            log.debug("Queue '%s': received %d message(s) with %d in flight",
                      self.queue_name, len(messages), self._in_flight)
        return messages

    def _start_all(self, messages: list[QueueMessage]) -> None:
        # One daemon thread per message, counted in flight until settled: a hung function cannot block exit.
        with self._in_flight_changed:
            self._in_flight += len(messages)
        for message in messages:
            threading.Thread(target=self._process_and_settle, args=(message,),
                             name=f"devhost-message-{message.id}", daemon=True).start()

    def _process_and_settle(self, message: QueueMessage) -> None:
        try:
            with hosting_cpu.thread():
                self._process(message)
        finally:
            with self._in_flight_changed:
                self._in_flight -= 1
                self._in_flight_changed.notify_all()

    @property
    def _polled_queue(self) -> QueueClient:
        """The queue's client: set by the poll that received any message being processed."""
        if self._queue is None:
            raise RuntimeError(f"queue '{self.queue_name}' has not been polled yet")
        return self._queue

    @property
    def _poison_queue(self) -> QueueClient:
        if self._poison is None:
            raise RuntimeError(f"queue '{self.queue_name}' has not been polled yet")
        return self._poison

    def _process(self, message: QueueMessage) -> None:
        if _dequeue_count(message) > self.options.max_dequeue_count:
            # Seen more often than allowed without an outcome (e.g. the process died mid-run).
            self._move_to_poison(message, "dequeue count above maxDequeueCount before processing")
            return
        try:
            body = decode_body(message.content or "", self.options.message_encoding)
        except ValueError as error:
            self._move_to_poison(message, str(error))
            return
        try:
            reason = f"New queue message detected on '{self.queue_name}'"
            self.function.invoke(function_message(message, body), reason=reason)
        except Exception:  # noqa: BLE001 - invoke has logged it; the retry policy decides what follows
            self._after_failure(message)
            return
        self._settle(lambda: self._polled_queue.delete_message(message.id, message.pop_receipt), message, "delete")

    def _after_failure(self, message: QueueMessage) -> None:
        if _dequeue_count(message) >= self.options.max_dequeue_count:
            self._move_to_poison(message, f"failed {message.dequeue_count} time(s), maxDequeueCount reached")
            return
        # Hidden for visibilityTimeout, then retried: the host's delay between attempts.
        self._settle(
            lambda: self._polled_queue.update_message(
                message.id, message.pop_receipt, visibility_timeout=round(self.options.visibility_timeout)
            ),
            message,
            "release",
        )

    def _move_to_poison(self, message: QueueMessage, reason: str) -> None:
        """Copy the message unchanged (same encoding) to ``<queue>-poison``, then remove the original."""
        def copy_and_delete() -> None:
            with self._poison_lock:
                if not self._poison_ready:
                    _create_if_missing(self._poison_queue)
                    self._poison_ready = True
            self._poison_queue.send_message(message.content)
            self._polled_queue.delete_message(message.id, message.pop_receipt)

        if self._settle(copy_and_delete, message, "move to poison queue"):
            log.error(
                "Message %s from queue '%s' moved to '%s': %s",
                message.id, self.queue_name, self.poison_queue_name, reason,
            )

    def _settle(self, action: Callable[[], Any], message: QueueMessage, what: str) -> bool:
        """Run a storage call that ends a message's attempt; a failure leaves it to reappear later."""
        try:
            action()
        except AzureError as error:
            log.warning("Queue '%s': could not %s message %s: %s", self.queue_name, what, message.id, error)
            return False
        return True
