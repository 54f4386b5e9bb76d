"""Safe by default, over plain HTTP: the server answers only as itself on the loopback address, serves only the files
it was started with (no request reaches a path), is read-only, caps what a request may send, and says what it
refuses in one line; ``personamine serve`` as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from fixtures import http_json, http_request, user_env

import personamine
from personamine.jobs.cli import main


@pytest.mark.parametrize("path", [
    "/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/feature/0/../../../../etc/passwd",
    "/feature/..%2f..%2f..%2fetc%2fpasswd/1", "/static/..%2f..%2fetc%2fpasswd", "/api/feature/0/%2fetc%2fpasswd",
    "/feature/-1/0", "/feature/1/0", "/api/feature/7/0", "/etc/passwd", "//etc/passwd", "/big.h5",
    "/file?path=/etc/passwd"])
def test_no_request_reaches_a_path(big_server, path):
    status, _, body = http_request("GET", big_server.url.rstrip("/") + path)
    assert status == 404 and b"root:" not in body, (path, status, body[:200])


def test_only_the_files_features_and_only_reads(big_server):
    assert http_request("GET", f"{big_server.url}feature/0/131072")[0] == 404  # past the file's last feature
    status, answer = http_json("GET", f"{big_server.url}api/feature/0/999999999")
    assert status == 404 and answer == {"error": "feature 999999999 is not in big.h5"}
    for method in ("PUT", "DELETE", "PATCH"):
        assert http_request(method, f"{big_server.url}api/index", body=b"{}")[0] == 405
    assert http_request("POST", f"{big_server.url}", body=b"x")[0] == 405
    status, answer = http_json("POST", f"{big_server.url}api/inspect", {"text": "hello"})
    assert status == 503 and "off" in answer["error"]  # started without live inspection


def test_a_page_from_elsewhere_cannot_use_it(big_server):
    # DNS rebinding: a name that resolves to 127.0.0.1 but is not this server's.
    status, _, body = http_request("GET", f"{big_server.url}api/index", headers={"Host": "evil.example:80"})
    assert status == 421 and b"131072" not in body
    for host in (f"localhost:{big_server.port}", f"127.0.0.1:{big_server.port}"):
        assert http_request("GET", f"{big_server.url}api/index", headers={"Host": host})[0] == 200
    status, _, _ = http_request("POST", f"{big_server.url}api/inspect", body=b'{"text": "x"}',
                                headers={"Origin": "http://evil.example", "Content-Type": "application/json"})
    assert status == 403


def test_request_sizes_are_capped(big_server):
    url = f"{big_server.url}api/inspect"
    status, headers, body = http_request("POST", url, body=b"x" * (65 << 10))
    assert status == 413 and b"at most 65,536 bytes" in body
    assert "default-src 'none'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    # A chunked body declares no length: it is cut off once it passes the cap.
    chunk = b"x" * 8192
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10)) + b"0\r\n\r\n"
    status, _, body = http_request("POST", url, body=chunked, headers={"Transfer-Encoding": "chunked"})
    assert status == 413
    for query, fragment in [("q=" + "a" * 201, "at most 200 characters"), ("n=501", "1 to 500 rows"),
                            ("n=0", "at least 1"), ("page=-1", "whole number"), ("sort=nope", "no index column"),
                            ("dir=up", "asc or desc")]:
        status, answer = http_json("GET", f"{big_server.url}api/index?{query}")
        assert status == 400 and fragment in answer["error"], (query, answer)
        status, _, body = http_request("GET", f"{big_server.url}?{query}")  # the page says it too, as text
        assert status == 400 and b"<script" in body


def test_another_host_only_when_asked_with_a_warning(big_results):
    with pytest.warns(UserWarning, match="anyone who can reach this address can read the files"):
        server = personamine.serve(big_results, host="0.0.0.0", port=0, inspect=False, quiet=True)
    with server:
        # Bound to every interface, it answers whatever name it is reached by; this test reaches it over loopback.
        assert http_request("GET", f"http://127.0.0.1:{server.port}/api/status",
                            headers={"Host": f"workstation.lan:{server.port}"})[0] == 200


def test_cli_serves_prints_its_address_and_stops_on_ctrl_c(big_results, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "personamine.jobs.cli", "serve", str(big_results), "--port",
                                "0", "--no-inspect"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=user_env())
    try:
        line = process.stdout.readline()
        assert line.startswith("personamine serve: 131,072 features of 1 file(s) at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0]
        status, data = http_json("GET", f"{url}api/index?n=1")
        assert status == 200 and data["total"] == 131_072
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and err == "", err


def test_cli_errors_are_one_line(big_results, tmp_path, capsys):
    for argv, fragment in [(["serve", str(tmp_path / "missing.h5")], "no mining file"),
                           (["serve", str(big_results), str(big_results)], "given twice"),
                           (["serve", str(big_results), "--discovery", str(big_results)], "not a personamine"),
                           (["serve", str(tmp_path)], "no mining file")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("personamine: error: ") and err.count("\n") == 1 and fragment in err, err
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(big_results), "--port", "70000"])
    assert exit_.value.code == 2 and "invalid port (0 to 65535) value" in capsys.readouterr().err
    assert not os.listdir(tmp_path)
