"""Entity-group transactions sent by ``shared.storage.batch`` against a real Azurite, beside the SDK's own
``submit_transaction``: the same operations leave the same rows, answer the same metadata and fail with the
same exceptions (type, status, failing operation's index, error code, message)."""

from __future__ import annotations

import hashlib
import inspect
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.data.tables import EdmType, EntityProperty, TableClient, TableServiceClient, UpdateMode

from shared.storage import batch
from shared.storage.tables import BOUNDED_CALLS, Stores
from shared.storage.transport import storage_client_options, storage_endpoint

PK = "order|INV-7"


@pytest.fixture
def sdk_table(stores: Stores) -> TableClient:
    return stores.tables.table("bysdk")


@pytest.fixture
def our_table(stores: Stores) -> TableClient:
    return stores.tables.table("byus")


def both(sdk_table: TableClient, our_table: TableClient, operations: Callable[[], list[Any]]) -> tuple[Any, Any]:
    """What the SDK's transaction answers, then what ours answers, for the same operations on a table each."""
    return sdk_table.submit_transaction(operations()), batch.submit(our_table, operations())


def rows(table: TableClient) -> dict[str, dict[str, Any]]:
    return {entity["RowKey"]: dict(entity) for entity in table.list_entities()}


def etags(table: TableClient) -> dict[str, str]:
    return {entity["RowKey"]: entity.metadata["etag"] for entity in table.list_entities()}


def seed(*tables: TableClient) -> None:
    for table in tables:
        for key in ("job", "old", "gone"):
            table.create_entity({"PartitionKey": PK, "RowKey": key, "Status": "queued", "Tries": 1})


def failure(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a failing call raised, without what differs per request (request id, time)."""
    with pytest.raises(Exception) as caught:
        call()
    error = caught.value
    message = "\n".join(line for line in str(getattr(error, "message", error)).splitlines()
                        if not line.startswith(("RequestId:", "Time:")))
    message = re.sub(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "<uuid>", message)  # e.g. a boundary
    return (type(error), getattr(error, "status_code", None), getattr(error, "index", None),
            str(getattr(error, "error_code", None)), message)


def test_the_same_operations_leave_the_same_rows_and_answer_the_same_metadata(
        sdk_table: TableClient, our_table: TableClient) -> None:
    seed(sdk_table, our_table)
    seen = {name: {key: table.get_entity(PK, key) for key in ("job", "old")}
            for name, table in (("sdk", sdk_table), ("ours", our_table))}
    runs = iter(("sdk", "ours"))

    def operations() -> list[Any]:
        read = seen[next(runs)]
        return [
            ("create", {"PartitionKey": PK, "RowKey": "step-1", "Step": "sent"}),
            ("upsert", {"PartitionKey": PK, "RowKey": "new-merged", "Note": "a"}),
            ("upsert", {"PartitionKey": PK, "RowKey": "new-replaced", "Note": "b"}, {"mode": UpdateMode.REPLACE}),
            ("update", {"PartitionKey": PK, "RowKey": "job", "Status": "sent"},
             {"mode": UpdateMode.REPLACE, "etag": read["job"].metadata["etag"],
              "match_condition": MatchConditions.IfNotModified}),
            ("update", {"PartitionKey": PK, "RowKey": "old", "Note": "merged"},
             {"mode": UpdateMode.MERGE, "etag": read["old"].metadata["etag"],
              "match_condition": MatchConditions.IfNotModified}),
            ("delete", {"PartitionKey": PK, "RowKey": "gone"}),
        ]

    theirs, ours = both(sdk_table, our_table, operations)

    assert rows(our_table) == rows(sdk_table)
    assert rows(our_table)["job"] == {"PartitionKey": PK, "RowKey": "job", "Status": "sent"}
    assert rows(our_table)["old"]["Note"] == "merged" and "gone" not in rows(our_table)
    assert [sorted(answer) for answer in ours] == [sorted(answer) for answer in theirs]
    written = etags(our_table)
    keys = ["step-1", "new-merged", "new-replaced", "job", "old"]
    assert [answer["etag"] for answer in ours[:5]] == [written[key] for key in keys]
    assert ours[5] == theirs[5] == {}


def test_every_type_the_app_writes_reads_back_as_the_sdk_wrote_it(
        sdk_table: TableClient, our_table: TableClient) -> None:
    def operations() -> list[Any]:
        return [("create", {
            "PartitionKey": PK, "RowKey": "typed",
            "At": datetime(2026, 12, 5, 10, 6, 45, 123456, tzinfo=UTC),
            "Big": EntityProperty(2**53 + 1, EdmType.INT64), "Wide": EntityProperty(7, EdmType.INT64), "Small": -42,
            "Sealed": b"\x00\x01sealed\xff", "Final": True, "Open": False, "Ratio": 0.1 + 0.2,
            "Text": "Zoë paid 12€ — 日本 🚚 \"quoted\" \\ back\nline", "Empty": "",
        })]

    both(sdk_table, our_table, operations)

    stored = our_table.get_entity(PK, "typed")
    assert dict(stored) == dict(sdk_table.get_entity(PK, "typed"))
    assert stored["At"] == datetime(2026, 12, 5, 10, 6, 45, 123456, tzinfo=UTC)
    assert stored["Big"] == EntityProperty(2**53 + 1, EdmType.INT64)
    assert stored["Sealed"] == b"\x00\x01sealed\xff"
    assert stored["Text"] == "Zoë paid 12€ — 日本 🚚 \"quoted\" \\ back\nline"
    assert stored["Final"] is True and stored["Ratio"] == 0.1 + 0.2


def test_a_transaction_of_a_hundred_operations_writes_them_all(our_table: TableClient) -> None:
    answers = batch.submit(our_table, [("create", {"PartitionKey": PK, "RowKey": f"step-{n:03}", "N": n})
                                       for n in range(100)])

    written = etags(our_table)
    assert len(written) == 100
    assert [answer["etag"] for answer in answers] == [written[f"step-{n:03}"] for n in range(100)]


def test_a_stale_etag_refuses_the_whole_transaction_as_the_sdk_says(
        sdk_table: TableClient, our_table: TableClient) -> None:
    seed(sdk_table, our_table)
    stale = {table.table_name: table.get_entity(PK, "job").metadata["etag"] for table in (sdk_table, our_table)}
    for table in (sdk_table, our_table):
        table.update_entity({"PartitionKey": PK, "RowKey": "job", "Status": "moved on"})

    def operations(table: TableClient) -> list[Any]:
        return [("create", {"PartitionKey": PK, "RowKey": "step-1"}),
                ("update", {"PartitionKey": PK, "RowKey": "job", "Status": "sent"},
                 {"mode": UpdateMode.REPLACE, "etag": stale[table.table_name],
                  "match_condition": MatchConditions.IfNotModified})]

    theirs = failure(lambda: sdk_table.submit_transaction(operations(sdk_table)))
    ours = failure(lambda: batch.submit(our_table, operations(our_table)))

    assert ours == theirs
    assert ours[1:4] == (412, 1, "UpdateConditionNotSatisfied")
    assert ours[0].__name__ == "TableTransactionError"
    assert rows(our_table)["job"]["Status"] == "moved on" and "step-1" not in rows(our_table)


def test_an_entity_that_exists_refuses_the_transaction_with_its_index(
        sdk_table: TableClient, our_table: TableClient) -> None:
    seed(sdk_table, our_table)

    def operations() -> list[Any]:
        return [("upsert", {"PartitionKey": PK, "RowKey": "job", "Status": "sent"}),
                ("create", {"PartitionKey": PK, "RowKey": "step-1"}),
                ("create", {"PartitionKey": PK, "RowKey": "old"})]

    theirs = failure(lambda: sdk_table.submit_transaction(operations()))
    ours = failure(lambda: batch.submit(our_table, operations()))

    assert ours == theirs
    assert ours[1:4] == (409, 2, "EntityAlreadyExists")
    assert rows(our_table)["job"]["Status"] == "queued" and "step-1" not in rows(our_table)


@pytest.mark.parametrize(("operations", "expected"), [
    # Azurite answers this one with a part whose status line is missing: both read it as http.client does.
    pytest.param(lambda: [("create", {"PartitionKey": PK, "RowKey": f"r{n}"}) for n in range(101)],
                 ("BadStatusLine", None, None), id="more-than-a-hundred"),
    pytest.param(lambda: [("create", {"PartitionKey": PK, "RowKey": "twice"}),
                          ("upsert", {"PartitionKey": PK, "RowKey": "twice"})],
                 ("TableTransactionError", 400, 1), id="one-entity-twice"),
    pytest.param(lambda: [("create", {"PartitionKey": PK, "RowKey": f"r{n}", "Blob": b"\x01" * 60_000})
                          for n in range(80)], ("RequestTooLargeError", 413, 0), id="over-four-mebibytes"),
])
def test_a_transaction_the_service_refuses_fails_as_the_sdk_says(
        sdk_table: TableClient, our_table: TableClient, operations: Callable[[], list[Any]],
        expected: tuple[Any, ...]) -> None:
    theirs = failure(lambda: sdk_table.submit_transaction(operations()))
    ours = failure(lambda: batch.submit(our_table, operations()))

    assert ours == theirs
    assert (ours[0].__name__, *ours[1:3]) == expected
    assert rows(our_table) == {}


def app_like_client(connection_string: str) -> TableServiceClient:
    """A table service client built with the app's options, on ``connection_string``."""
    from shared.settings import StorageSettings

    endpoint = storage_endpoint(StorageSettings(connection_string, None, None, None), "table")
    return TableServiceClient.from_connection_string(connection_string,
                                                     **storage_client_options(endpoint, **BOUNDED_CALLS))


def one_create() -> list[Any]:
    return [("create", {"PartitionKey": PK, "RowKey": "step-1"})]


def test_a_refused_signature_fails_the_whole_batch_as_the_sdk_says(
        storage_connection_string: str, stores: Stores) -> None:
    stores.tables.table("signed")
    wrong = re.sub(r"AccountKey=[^;]+", "AccountKey=" + "A" * 86 + "==", storage_connection_string)
    with app_like_client(wrong) as service:
        table = service.get_table_client(stores.tables.prefix + "signed")
        theirs = failure(lambda: table.submit_transaction(one_create()))
        ours = failure(lambda: batch.submit(table, one_create()))

    assert ours == theirs
    assert ours[1] == 403
    assert rows(stores.tables.table("signed")) == {}


def test_a_missing_table_fails_as_the_sdk_says(storage_connection_string: str) -> None:
    with app_like_client(storage_connection_string) as service:
        absent = service.get_table_client("nosuch" + uuid.uuid4().hex[:8])
        theirs = failure(lambda: absent.submit_transaction(one_create()))
        ours = failure(lambda: batch.submit(absent, one_create()))

    assert ours == theirs
    assert ours[1] == 404


@pytest.mark.parametrize("operations", [
    pytest.param([("create", {"PartitionKey": "a", "RowKey": "1"}), ("create", {"PartitionKey": "b", "RowKey": "1"})],
                 id="two-partitions"),
    pytest.param([("replace-all", {"PartitionKey": PK, "RowKey": "1"})], id="unknown-operation"),
    pytest.param([("create", {"PartitionKey": PK})], id="no-row-key"),
    pytest.param([("create",)], id="not-a-pair"),
])
def test_operations_the_sdk_refuses_before_sending_are_refused_alike(
        our_table: TableClient, operations: list[Any]) -> None:
    theirs = failure(lambda: our_table.submit_transaction(operations))
    ours = failure(lambda: batch.submit(our_table, operations))

    assert ours == theirs
    assert rows(our_table) == {}


def test_no_operations_are_sent_and_answered_as_the_sdk_does(sdk_table: TableClient, our_table: TableClient) -> None:
    # The service refuses an empty changeset with a 400, which the SDK answers as []; Azurite answers a 500.
    assert failure(lambda: batch.submit(our_table, [])) == failure(lambda: sdk_table.submit_transaction([]))


def test_the_request_body_is_what_azure_core_writes_for_the_sdk(our_table: TableClient) -> None:
    """Byte for byte, boundaries and dates aside: azure-core's multipart writing of the SDK's requests."""
    from azure.core.pipeline import Pipeline
    from azure.core.rest import HttpRequest
    from azure.data.tables._policies import StorageHeadersPolicy

    seen = our_table.upsert_entity({"PartitionKey": PK, "RowKey": "job"})
    requests = batch.operation_requests(our_table, [
        ("create", {"PartitionKey": PK, "RowKey": "a", "Text": "Zoë 🚚", "At": datetime(2026, 1, 2, tzinfo=UTC)}),
        ("upsert", {"PartitionKey": PK, "RowKey": "b", "Blob": b"\x00\xff"}, {"mode": UpdateMode.REPLACE}),
        ("upsert", {"PartitionKey": PK, "RowKey": "c"}),
        ("update", {"PartitionKey": PK, "RowKey": "job", "N": EntityProperty(2**40, EdmType.INT64)},
         {"etag": seen["etag"], "match_condition": MatchConditions.IfNotModified}),
        ("delete", {"PartitionKey": PK, "RowKey": "d"}),
    ])
    changeset = HttpRequest("POST", "")
    changeset.set_multipart_mixed(*requests, policies=[StorageHeadersPolicy()], boundary="changeset_X")
    theirs = HttpRequest("POST", "http://host/$batch")
    theirs.set_multipart_mixed(changeset, policies=[StorageHeadersPolicy()], enforce_https=False, boundary="batch_Y")
    Pipeline._prepare_multipart_mixed_request(theirs)
    theirs.prepare_multipart_body()

    ours = batch.batch_body(requests, "batch_Y", "changeset_X", "Mon, 01 Jan 2001 00:00:00 GMT")

    def undated(body: bytes) -> bytes:
        return re.sub(rb"(x-ms-date|Date): [^\r]+", rb"\1: -", body)

    assert undated(ours) == undated(theirs.content)
    stamped = b"\r\nx-ms-date: Mon, 01 Jan 2001 00:00:00 GMT\r\nDate: Mon, 01 Jan 2001 00:00:00 GMT\r\n"
    assert ours.count(stamped) == len(requests)


# What shared/storage/batch.py mirrors of the SDK: its transaction sending, the errors it raises and the metadata
# it answers. Before a new SDK release is added to batch.CHECKED_RELEASES, read what changed, bring batch.py in
# line with it (the tests above show whether it still is), then record the new fingerprints.
MIRRORED = {
    "azure.data.tables._base_client:TablesBaseClient._batch_send": "0ada8524fa600705",
    "azure.data.tables._table_client:TableClient.submit_transaction": "8333c3c4d9d81679",
    "azure.data.tables._base_client:extract_batch_part_metadata": "0c44ee07d828c200",
}


def fingerprint(where: str) -> str:
    import importlib

    module_name, _, qualified = where.partition(":")
    target: Any = importlib.import_module(module_name)
    for name in qualified.split("."):
        target = getattr(target, name)
    return hashlib.sha256(inspect.getsource(target).encode()).hexdigest()[:16]


def skip_unless_checked_release() -> None:
    from azure.data.tables import __version__

    if not batch.checked_release():
        pytest.skip(f"azure-data-tables {__version__} is not among the releases shared/storage/batch.py was checked "
                    "against: the app sends its transactions through submit_transaction (see the test below)")


@pytest.mark.parametrize("where", sorted(MIRRORED))
def test_what_the_fast_transaction_mirrors_of_the_sdk_is_unchanged(where: str) -> None:
    skip_unless_checked_release()
    assert fingerprint(where) == MIRRORED[where], (
        f"{where} changed in this azure-data-tables release: check shared/storage/batch.py against it")


def test_under_a_release_not_checked_the_app_sends_through_the_sdk(
        stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.storage.tables import JOBS

    sent: list[int] = []
    monkeypatch.setattr(batch, "CHECKED_RELEASES", frozenset({"0.0.0"}))
    monkeypatch.setattr(batch, "submit", lambda *args, **kwargs: sent.append(1))
    key = uuid.uuid4().hex

    answers = stores.tables.transaction(JOBS, [("create", {"PartitionKey": key, "RowKey": "a"}),
                                               ("create", {"PartitionKey": key, "RowKey": "b"})])

    assert sent == [] and len(answers) == 2
    assert {row["RowKey"] for row in stores.tables.table(JOBS).query_entities(
        "PartitionKey eq @pk", parameters={"pk": key})} == {"a", "b"}


def test_the_private_parts_the_fast_transaction_uses_are_there(our_table: TableClient) -> None:
    skip_unless_checked_release()
    from azure.core.rest._http_response_impl import RestHttpClientTransportResponse
    from azure.data.tables._error import _decode_error, _validate_tablename_error
    from azure.data.tables._table_batch import TableBatchOperations

    assert callable(_decode_error) and callable(_validate_tablename_error)
    request = batch.operation_requests(our_table, one_create())[0]
    answer = b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n\r\n{}"
    read = batch._sdk_response(batch.AnswerPart(409, {}, answer), request)
    assert isinstance(read, RestHttpClientTransportResponse)
    assert (read.status_code, read.reason, read.read(), read.request) == (409, "Conflict", b"{}", request)
    assert {"config", "endpoint", "table_name", "is_cosmos_endpoint"} <= set(
        inspect.signature(TableBatchOperations).parameters)
    assert our_table._client._config.version and our_table._primary_hostname and our_table.scheme
    assert isinstance(our_table._cosmos_endpoint, bool)
    assert callable(our_table._client.send_request)
