"""pyVoIP's process-wide side effects stay contained: warning filters, stdout, numbers."""

from __future__ import annotations

import subprocess
import sys
import warnings


from adapters.pbx import _pyvoip as pv
from tests.conftest import captured_logs


def test_importing_pyvoip_through_the_adapter_keeps_strict_warning_filters_and_raises_nothing() -> None:
    code = (
        "import warnings; warnings.simplefilter('error'); before = list(warnings.filters);"
        "import adapters.pbx.sip_ua;"
        "assert warnings.filters == before, warnings.filters[:3]; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_pyvoip_call_code_cannot_reset_the_warning_filters() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        before = list(warnings.filters)
        pv._voip_module.warnings.simplefilter("default")  # what pyVoIP's call code does
        assert warnings.filters == before
        assert pv._voip_module.warnings.warn is warnings.warn  # its warnings still go out


def test_pyvoip_messages_go_to_structlog_with_numbers_masked_and_not_to_stdout(capsys) -> None:  # noqa: ANN001
    with captured_logs(pv) as logs:
        pv.SIP.debug("raw sip:13800000001@pbx", "TODO: Add 500 Error on Receiving SIP Response from 13800000001")
        pv.RTP.debug("only when pyVoIP.DEBUG")  # pyVoIP prints these only in DEBUG: dropped
    assert capsys.readouterr().out == ""
    assert [e["event"] for e in logs] == ["pbx.pyvoip.message"]
    assert "138****0001" in logs[0]["text"] and "13800000001" not in logs[0]["text"]
