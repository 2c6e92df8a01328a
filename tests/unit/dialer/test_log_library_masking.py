"""Lines that libraries write through the standard `logging` module (uvicorn's error
log with an application's traceback, asyncio's unretrieved task exceptions, asyncpg,
aiomqtt) and exception texts carrying SIP URIs: numbers masked, secrets never shown."""

from __future__ import annotations

import contextlib
import io
import logging

import pytest
import structlog

from dialer.logs import configure_logging, mask_numbers

TOKEN = "dg_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v"


@pytest.fixture
def stderr():
    """configure_logging's root handler, writing to a buffer instead of the process's stderr."""
    configure_logging("info", json=True)
    out = io.StringIO()
    for handler in logging.getLogger().handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(out)
    yield out
    logging.basicConfig(force=True)
    structlog.reset_defaults()


def _fail(message: str) -> None:
    raise RuntimeError(message)


def test_uvicorn_traceback_masks_numbers_and_secrets(stderr: io.StringIO) -> None:
    try:
        _fail("(sqlite3.IntegrityError) [parameters: ('13800000001', '6222021234567890', "
              "'11010519491231002X')] bearer " + TOKEN + " dsn postgresql://dg:s3cretpw@db/dialgate")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application\n")
    err = stderr.getvalue()
    assert "Exception in ASGI application" in err and "RuntimeError" in err
    for clear in ("13800000001", "6222021234567890", "11010519491231002X", TOKEN, "s3cretpw"):
        assert clear not in err, clear
    assert "138****0001" in err


def test_library_message_masks_sip_uri_user(stderr: io.StringIO) -> None:
    logging.getLogger("pyVoIP").warning("TX INVITE sip:13800000001@pbx.local SIP/2.0")
    err = stderr.getvalue()
    assert "13800000001" not in err and "INVITE sip:" in err


def test_structlog_exception_text_masks_sip_uri_user() -> None:
    event = {"event": "pbx.sip.internal_error",
             "exception": "ValueError: no route for <sip:13800000001@pbx.local;user=phone>",
             "error": "bad request line INVITE sip:13900000002@10.0.0.9 SIP/2.0"}
    out = mask_numbers(None, "error", event)
    assert "13800000001" not in out["exception"] and "13900000002" not in out["error"]


def test_structlog_values_never_carry_a_token_or_url_password() -> None:
    event = {"event": "x", "error": "refused " + TOKEN, "exception": "ConnectError mqtt://dg:s3cretpw@broker:1883"}
    out = mask_numbers(None, "error", event)
    assert TOKEN not in out["error"] and "s3cretpw" not in out["exception"]


def test_a_library_line_that_fails_to_format_is_reported_with_its_numbers_masked(
    stderr: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    # A library's own bug (an argument too few for its format) must not print the record's
    # arguments in the clear: logging's report of it bypasses every formatter.
    with contextlib.suppress(TypeError):  # pytest's own capture handler re-raises it after ours
        logging.getLogger("asyncpg").warning("dial %s from %s", "13800000001")
    reported = capsys.readouterr().err + stderr.getvalue()
    assert "13800000001" not in reported
    assert "logging error in asyncpg" in reported and "138****0001" in reported
