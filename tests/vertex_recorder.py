"""A stand-in for the Vertex AI REST endpoint, for the real client library to talk to.

Nothing real can run the Vertex AI control plane here, so this records what the library sends
and answers as the API does: a created job is the job it was sent, with a name and a state;
a model upload is a long-running operation, which is done when the library asks after it.
"""

import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

PARENT = "projects/my-project/locations/europe-west4"
JOB_NAME = f"{PARENT}/customJobs/123"
MODEL_NAME = f"{PARENT}/models/456"
OPERATION_NAME = f"{PARENT}/models/456/operations/789"


# Resources kept by name, as the API keeps them (metadata stores and their contexts, executions
# and artifacts; TensorBoards and their experiments, runs and time series; persistent resources):
# created by a POST to their collection with `?<kind>Id=ID`, read by GET, changed by PATCH.
KEPT = re.compile(r"/v1/(projects/[^/]+/locations/[^/]+/(metadataStores|tensorboards|"
                  r"persistentResources)(/.*)?)$")


class Recorder:
    """Records each request; answers as the API does, or, given `refusal` = (HTTP status, the
    API's error object[, a pattern of the paths refused]), refuses every request (or those) as
    the API does. `resources` are there before
    the first request (name -> resource), e.g. a TensorBoard or a persistent resource; the
    default metadata store always is."""

    def __init__(self, refusal: Optional[tuple] = None,
                 resources: Optional[dict[str, dict]] = None):
        self.requests: list[dict] = []
        self.resources: dict[str, dict] = {f"{PARENT}/metadataStores/default": {
            "name": f"{PARENT}/metadataStores/default"}, **(resources or {})}
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _kept(self, body: str) -> bool:
                """The requests on kept resources, answered from `resources`."""
                path, _, query = self.path.partition("?")
                match = KEPT.match(path)
                if not match:
                    return False
                name, verb = match.group(1), None
                if ":" in name.rsplit("/", 1)[-1]:
                    name, verb = name.rsplit(":", 1)
                sent = json.loads(body) if body else {}
                kept = recorder.resources
                if self.command == "GET" and verb is None:
                    if name in kept:
                        self._reply(200, kept[name])
                    elif len(name.split("/")) % 2:  # a collection: its list
                        items = [v for k, v in kept.items() if k.rsplit("/", 1)[0] == name]
                        self._reply(200, {name.rsplit("/", 1)[-1]: items})
                    else:
                        self._reply(404, {"error": {"code": 404, "status": "NOT_FOUND",
                                                    "message": f"{name} not found"}})
                elif self.command == "POST" and verb is None:  # create, named by ?<kind>Id=
                    ids = [v[0] for k, v in urllib.parse.parse_qs(query).items()
                           if k.endswith("Id")]
                    created = f"{name}/{ids[0] if ids else len(kept)}"
                    if created in kept:
                        self._reply(409, {"error": {"code": 409, "status": "ALREADY_EXISTS",
                                                    "message": f"{created} already exists"}})
                        return True
                    kept[created] = {**sent, "name": created, "etag": "1",
                                     "createTime": "2026-01-01T00:00:00Z"}
                    self._reply(200, kept[created])
                elif self.command == "DELETE":
                    kept.pop(name, None)
                    self._reply(200, {"name": f"{name}/operations/1", "done": True, "response": {"@type": "type.googleapis.com/google.protobuf.Empty"}})
                elif self.command == "PATCH":
                    kept.setdefault(name, {"name": name}).update(sent)
                    self._reply(200, kept[name])
                else:  # verbs: addContextChildren, write, batchCreate, ...
                    self._reply(200, {})
                return True

            def do_DELETE(self):
                self._record("")
                self._kept("")

            def do_PATCH(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                self._record(body)
                self._kept(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                self._record(body.decode())
                if self._kept(body.decode()):
                    return
                if self.path.split("?")[0].endswith("/models:upload"):
                    self._reply(200, {"name": OPERATION_NAME, "metadata": {
                        "@type": "type.googleapis.com/google.cloud.aiplatform.v1."
                                 "UploadModelOperationMetadata"}})
                    return
                job = json.loads(body)
                job.update(name=JOB_NAME, state="JOB_STATE_QUEUED")
                self._reply(200, job)

            def do_GET(self):  # a kept resource, or the library polling an operation
                self._record("")
                if self._kept(""):
                    return
                self._reply(200, {"name": OPERATION_NAME, "done": True, "response": {
                    "@type": "type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse",
                    "model": MODEL_NAME}})

            def _record(self, body: str):
                recorder.requests.append({"method": self.command, "path": self.path,
                                          "headers": dict(self.headers), "body": body})

            def _reply(self, status: int, answer: dict):
                if refusal is not None and (len(refusal) < 3 or re.search(refusal[2],
                                                                          self.path)):
                    status, answer = refusal[0], {"error": refusal[1]}
                recorder.requests[-1]["status"] = status
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
