"""`jarvis_core.testing`, the helpers plugin authors get: a plugin registered for a block, a session over it, and a
stand-in HTTP server on 127.0.0.1 that a plugin's hooks can talk to."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import httpx

from jarvis_core import plugins
from jarvis_core.api import Detection, hookimpl
from jarvis_core.testing import registered, serve, session

from engines_fixture import EchoPlugin


class VersionHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        body = json.dumps({"version": "9.9"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class AsksTheServer(EchoPlugin):
    @hookimpl
    def detect(self, ctx):
        version = httpx.get(f"{ctx.settings.url}/api/version", trust_env=False).json()["version"]
        return Detection(self.name, installed=True, reachable=True, version=version, address=ctx.settings.url)


def test_a_plugin_registered_for_a_block_detects_a_stand_in_server(tmp_path):
    with serve(VersionHandler) as url:
        assert url.startswith("http://127.0.0.1:")
        with registered(AsksTheServer(), "asks") as plugin:
            found = session({"engines": {"echo": {"url": url}}}, state_dir=tmp_path / "state").detect("echo")
            assert (found.version, found.address, plugin.calls) == ("9.9", url, [])
        assert plugins.pm.get_plugin("asks") is None
    try:
        httpx.get(f"{url}/api/version", trust_env=False, timeout=1)
        raise AssertionError("the stand-in still answers after its block")
    except httpx.HTTPError:
        pass


def test_the_isolated_fixture_points_state_and_config_at_the_test(jarvis_isolated, monkeypatch):
    import os

    assert os.environ["JARVIS_STATE_DIR"] == str(jarvis_isolated / "state")
    assert os.environ["HF_HUB_OFFLINE"] == "1" and "OLLAMA_HOST" not in os.environ
    assert os.getcwd() == str(jarvis_isolated)
