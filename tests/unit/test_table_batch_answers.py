"""Reading a ``$batch`` answer as the Table service writes it (the documented form: entity bodies on 201,
a preamble, padding after a delimiter, a quoted boundary), which Azurite's shorter answers do not show."""

from __future__ import annotations

import pytest

from shared.storage.batch import answer_parts

CHANGESET = "changesetresponse_5f0c6f6e-5b5d-4b1a-9a51-0e0b9b8a3f11"
BATCH = "batchresponse_7a1c3b1e-2d4f-4c61-8c33-5e0c2c7b9d22"
ETAG_1 = "W/\"datetime'2026-12-05T10%3A03%3A43.6296368Z'\""
ETAG_2 = "W/\"datetime'2026-12-05T10%3A03%3A43.6296369Z'\""


def service_answer(*operation_answers: str) -> bytes:
    parts = "".join(f"--{CHANGESET}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                    f"{answer}\r\n" for answer in operation_answers)
    return (f"This is the preamble, to be ignored.\r\n--{BATCH}\r\n"
            f"Content-Type: multipart/mixed; boundary={CHANGESET}\r\n\r\n{parts}--{CHANGESET}--\r\n"
            f"--{BATCH}--  \r\nand an epilogue\r\n").encode()


CREATED = ("HTTP/1.1 201 Created\r\nContent-ID: 1\r\nContent-Type: application/json;odata=minimalmetadata;"
           "streaming=true;charset=utf-8\r\nCache-Control: no-cache\r\nPreference-Applied: return-content\r\n"
           f"ETag: {ETAG_1}\r\nDataServiceVersion: 3.0;\r\n\r\n"
           '{"odata.metadata":"https://a.table.core.windows.net/$metadata#jobs/@Element","PartitionKey":"p",'
           '"RowKey":"step-1","Text":"a line\\r\\n--not a boundary"}')
UPDATED = f"HTTP/1.1 204 No Content\r\nContent-ID: 2\r\nCache-Control: no-cache\r\netag: {ETAG_2}\r\n\r\n"
DELETED = "HTTP/1.1 204 No Content\r\nContent-ID: 3\r\nCache-Control: no-cache\r\n\r\n"


def test_each_operations_status_and_etag_are_read_in_order() -> None:
    parts = answer_parts(service_answer(CREATED, UPDATED, DELETED), f'multipart/mixed; boundary="{BATCH}"')

    assert [part.status for part in parts] == [201, 204, 204]
    assert [part.headers.get("ETag") for part in parts] == [ETAG_1, ETAG_2, None]
    assert parts[0].message.endswith(b'--not a boundary"}')


def test_a_refused_operation_is_read_with_its_body() -> None:
    refused = ("HTTP/1.1 409 Conflict\r\nContent-ID: 2\r\nContent-Type: application/json;odata=minimalmetadata;"
               "charset=utf-8\r\n\r\n"
               '{"odata.error":{"code":"EntityAlreadyExists","message":{"lang":"en-US","value":"1:exists"}}}')

    (part,) = answer_parts(service_answer(refused), f"multipart/mixed; boundary={BATCH}")

    assert part.status == 409
    assert part.message.endswith(b'"1:exists"}}}')


def test_a_part_of_another_kind_is_refused_as_azure_core_refuses_it() -> None:
    body = f"--{BATCH}\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{BATCH}--\r\n".encode()

    with pytest.raises(ValueError, match="other than application/http"):
        answer_parts(body, f"multipart/mixed; boundary={BATCH}")
