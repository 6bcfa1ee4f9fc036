"""What a failed piece of work means, named by what the queue consumer does about it.

Every stage raises one of these, or lets ``classify`` name what it met:

- ``RetryLater``: the work can succeed later (a network error, a timeout, a 5xx, a 429, a
  token that could not be had, storage that did not answer). The message goes back to its
  queue after the delay, or after exponential backoff with full jitter (``back_off``),
  until the stage's maximum age is spent; then it is dead-lettered with the reason.
- ``WaitForSlot``: not a failure at all: a send waits for its paced slot.
- ``PermanentFailure``: trying again cannot help (bad data, a refused recipient, a
  configuration that names nothing). The message is dead-lettered at once with the reason.

Anything else is a bug: it reaches the host, whose own redelivery and poison handling apply.
This module imports nothing of the application, so every layer may raise these.
"""

from __future__ import annotations

from collections.abc import Iterator

# HTTP statuses that say "not now" rather than "never".
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Exception class names (matched over the MRO, so no SDK need be imported to classify).
_TRANSIENT_NAMES = frozenset({
    # requests / urllib3 / the standard library
    "ConnectionError", "Timeout", "TimeoutError", "ChunkedEncodingError", "ConnectTimeout", "ReadTimeout",
    "ProtocolError", "IncompleteRead", "RemoteDisconnected", "ConnectionResetError", "ConnectionRefusedError",
    "BrokenPipeError", "gaierror",
    # azure-core: no answer, or an answer cut off (storage, Key Vault, Service Bus, Entra)
    "ServiceRequestError", "ServiceResponseError", "ServiceRequestTimeoutError", "ServiceResponseTimeoutError",
    "IncompleteReadError",
    # azure-identity: a token that could not be had (Entra unreachable or answering 5xx)
    "ClientAuthenticationError", "CredentialUnavailableError",
    # azure-servicebus
    "ServiceBusConnectionError", "OperationTimeoutError", "ServiceBusServerBusyError",
    # our own: a row that kept changing under us
    "ConcurrencyError",
})
# Classes among the names above whose subclasses say otherwise.
_PERMANENT_NAMES = frozenset({"SSLError", "CertificateError", "SSLCertVerificationError"})


class RetryLater(Exception):
    """Try again after ``delay`` seconds; with ``back_off``, after the consumer's exponential backoff."""

    def __init__(self, delay: float, reason: str, status: int | None = None, *, back_off: bool = False) -> None:
        super().__init__(f"retry after backoff: {reason}" if back_off else f"retry after {delay:.1f}s: {reason}")
        self.delay = delay
        self.reason = reason
        self.status = status
        self.back_off = back_off


class WaitForSlot(RetryLater):
    """Come back at ``slot`` (epoch seconds), which is reserved for this send. Not a failure."""

    def __init__(self, delay: float, slot: float, reason: str) -> None:
        super().__init__(delay, reason)
        self.slot = slot


class PermanentFailure(Exception):
    """Work that cannot succeed by trying again (bad data, a refused recipient)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and the ones it was raised from or during, innermost last, without loops
    (azure-core keeps the transport's error as ``inner_exception``)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        inner = getattr(current, "inner_exception", None)
        current = current.__cause__ or current.__context__ or (inner if isinstance(inner, BaseException) else None)


def _names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def _status_of(error: BaseException) -> int | None:
    """The HTTP status an error carries: ours (``status``), azure-core's (``status_code``)."""
    for attribute in ("status", "status_code"):
        value = getattr(error, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


def describe(error: BaseException) -> str:
    """A reason for the audit and the logs: the class, and the status where there is one.
    Never the message: it can repeat a URL with its query string, or a phone number."""
    if isinstance(error, RetryLater | PermanentFailure):
        return error.reason
    status = _status_of(error)
    return f"{type(error).__name__} (HTTP {status})" if status is not None else type(error).__name__


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) heals with time. An error that had to drop its
    cause (it held a URL with secrets) says so itself with ``transient = True``."""
    for link in _chain(error):
        if isinstance(link, RetryLater) or getattr(link, "transient", None) is True:
            return True
        names = _names(link)
        if names & _PERMANENT_NAMES:
            return False
        status = _status_of(link)
        if status is not None and "ClientAuthenticationError" not in names:
            return status in TRANSIENT_STATUSES
        if names & _TRANSIENT_NAMES:
            return True
    return False


def classify(error: BaseException) -> RetryLater | PermanentFailure | None:
    """What the consumer does with ``error``: RetryLater (backing off), PermanentFailure, or None
    for a bug, which is left to the host."""
    if isinstance(error, RetryLater | PermanentFailure):
        return error
    if is_transient(error):
        return RetryLater(0.0, describe(error), _status_of(error), back_off=True)
    status = _status_of(error)
    if status is not None and 400 <= status < 500:
        return PermanentFailure(f"refused: {describe(error)}")
    return None


# Network failures in words, for a log line an operator reads: (class names met in the chain, words).
_NETWORK_WORDS: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"gaierror", "NameResolutionError"}), "name not resolved"),
    (frozenset({"ConnectionRefusedError"}), "connection refused"),
    (frozenset({"SSLCertVerificationError", "CertificateError"}), "its TLS certificate is not trusted"),
    (frozenset({"SSLError"}), "the TLS handshake failed"),
    (frozenset({"ConnectTimeout", "ConnectTimeoutError"}), "no connection within the timeout"),
    (frozenset({"ReadTimeout", "ReadTimeoutError", "TimeoutError", "ServiceRequestTimeoutError",
                "ServiceResponseTimeoutError"}), "no answer within the timeout"),
    (frozenset({"ConnectionResetError", "RemoteDisconnected", "BrokenPipeError", "ChunkedEncodingError",
                "IncompleteRead", "ProtocolError"}), "the connection was dropped"),
)


# The network problems that mean no connection could be opened at all: the peer is down or unreachable.
CANNOT_CONNECT = frozenset({"name not resolved", "connection refused", "no connection within the timeout",
                            "the connection failed"})


def cannot_connect(error: BaseException) -> bool:
    """Whether ``error`` says the peer could not even be connected to (as opposed to a failed answer)."""
    return network_problem(error) in CANNOT_CONNECT


def network_problem(error: BaseException) -> str | None:
    """Why a peer could not be reached, in words ("name not resolved", "connection refused", ...), or None
    when ``error`` is no network failure. An error that dropped its cause keeps the words as ``network``."""
    links = list(_chain(error))
    for link in links:
        kept = getattr(link, "network", None)
        if isinstance(kept, str) and kept:
            return kept
    names = set().union(*(_names(link) for link in links))
    for classes, words in _NETWORK_WORDS:
        if names & classes:
            return words
    if any("NewConnectionError" in _names(link) and "refused" in str(link) for link in links):
        return "connection refused"  # urllib3 may keep the errno only in its message
    return "the connection failed" if names & {"ConnectionError", "NewConnectionError"} else None


def peer_of(error: BaseException) -> str | None:
    """The origin (``https://host:port``) a network failure was met at, when its chain names one
    (urllib3 keeps the pool or the connection it tried); never a path or a query, which can hold secrets."""
    for link in _chain(error):
        names = _names(link)
        if "MaxRetryError" in names:
            pool = getattr(link, "pool", None)
            scheme = getattr(pool, "scheme", None)
        elif "NewConnectionError" in names:
            pool = getattr(link, "conn", None)  # an HTTPSConnection or an HTTPConnection
            scheme = "https" if "HTTPS" in type(pool).__name__ else "http"
        else:
            continue
        host, port = getattr(pool, "host", None), getattr(pool, "port", None)
        if isinstance(host, str) and host and isinstance(scheme, str):
            default = {"http": 80, "https": 443}.get(scheme)
            return f"{scheme}://{host}" + (f":{port}" if isinstance(port, int) and port != default else "")
    return None
