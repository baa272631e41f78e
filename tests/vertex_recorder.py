"""A stand-in for the Vertex AI REST endpoint, for the real client library to talk to.

Nothing real can run the Vertex AI control plane here, so this records what the library sends
and answers as the API does: a created job is the job it was sent, with a name and a state;
a model upload is a long-running operation, which is done when the library asks after it.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

PARENT = "projects/my-project/locations/europe-west4"
JOB_NAME = f"{PARENT}/customJobs/123"
MODEL_NAME = f"{PARENT}/models/456"
OPERATION_NAME = f"{PARENT}/models/456/operations/789"


class Recorder:
    """Records each request; answers as the API does, or, given `refusal` = (HTTP status, the
    API's error object), refuses every request as the API does."""

    def __init__(self, refusal: Optional[tuple[int, dict]] = None):
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                self._record(body.decode())
                if self.path.split("?")[0].endswith("/models:upload"):
                    self._reply(200, {"name": OPERATION_NAME, "metadata": {
                        "@type": "type.googleapis.com/google.cloud.aiplatform.v1."
                                 "UploadModelOperationMetadata"}})
                    return
                job = json.loads(body)
                job.update(name=JOB_NAME, state="JOB_STATE_QUEUED")
                self._reply(200, job)

            def do_GET(self):  # the library polling an operation
                self._record("")
                self._reply(200, {"name": OPERATION_NAME, "done": True, "response": {
                    "@type": "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse",
                    "model": MODEL_NAME}})

            def _record(self, body: str):
                recorder.requests.append({"method": self.command, "path": self.path,
                                          "headers": dict(self.headers), "body": body})

            def _reply(self, status: int, answer: dict):
                if refusal is not None:
                    status, answer = refusal[0], {"error": refusal[1]}
                reply = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
