"""The built module over HTTP for the end-to-end tests, as a WasmPlugin `url: https://...` or
Envoy's `vm_config.code.remote` names it."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading

MODULE_PATH = "/kafka-filter/plugin.wasm"
PACKED_PATH = "/kafka-filter/plugin.tar.gz"   # the module in a gzip tar, as in an OCI image layer


class ModuleServer:
    """The module (and the module packed in a gzip tar) over HTTP; any other path is 404."""

    def __init__(self, module: bytes):
        packed = io.BytesIO()
        with tarfile.open(fileobj=packed, mode="w:gz") as tar:
            info = tarfile.TarInfo("plugin.wasm")
            info.size = len(module)
            tar.addfile(info, io.BytesIO(module))
        bodies = {MODULE_PATH: module, PACKED_PATH: packed.getvalue()}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):   # noqa: N802 - the standard library's name
                body = bodies.get(self.path)
                if body is not None:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.sha256 = hashlib.sha256(module).hexdigest()

    def url(self, path: str = MODULE_PATH) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
