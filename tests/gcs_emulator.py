"""A real GCS server for the tests: gcp-storage-emulator, with three gaps closed.

Run as a script with the emulator's own arguments (`start --host=... --port=...
--in-memory --default-bucket=...`); `Emulator` starts it for a fixture and
`client_env(url)` is the environment that points every client the project
uses at it (gcsfs through etils.epath, google-cloud-storage, TensorStore under
Orbax), with no credentials and no lookups of Google's metadata server.

The additions to gcp-storage-emulator 2026.7.19 (server side only):
1. objects.move (POST .../o/SRC/moveTo/o/DST): the stock emulator answers
   501, which gcsfs retries for ~33 s before copying instead.
2. x-goog-generation headers on downloads: without them TensorStore reads
   generation 0 and its next conditional write fails ("Malformed
   StorageGeneration"), an intermittent Orbax save failure.
3. ifGenerationMatch / ifGenerationNotMatch on uploads, answered with 412
   like real GCS (create-if-absent and compare-and-swap rely on them).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from http import HTTPStatus

BUCKET = "test-bucket"


def client_env(url: str) -> dict:
  """Environment pointing gcsfs, google-cloud-storage and TensorStore at `url`."""
  return {
      "STORAGE_EMULATOR_HOST": url,  # gcsfs, google-cloud-storage
      "TENSORSTORE_GCS_HTTP_URL": url,  # TensorStore (Orbax's array data)
      # gcsfs's bucket-type probe speaks gRPC, which the emulator lacks: without
      # this every call waits ~60 s. Read when gcsfs is imported.
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
      "EPATH_USE_TF": "false",
      "FSSPEC_GCS_TOKEN": "anon",
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # TensorStore: no OAuth lookups
      "NO_GCE_CHECK": "true",
      "GOOGLE_CLOUD_PROJECT": "test",
  }


class Emulator:
  """The emulator as a subprocess on a free local port, in memory, with one bucket."""

  def __init__(self, log_path, bucket=BUCKET):
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      self.port = s.getsockname()[1]
    self.url = f"http://127.0.0.1:{self.port}"
    self.bucket = bucket
    self.log_path = log_path
    self.proc = None

  def start(self, timeout=30.0):
    self._log = open(self.log_path, "w")
    self.proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "start", "--host=127.0.0.1",
         f"--port={self.port}", "--in-memory", f"--default-bucket={self.bucket}", "--quiet"],
        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + timeout
    while True:
      try:
        with urllib.request.urlopen(self.url + "/", timeout=1) as r:
          if r.read().strip() == b"OK":
            return self
      except OSError:
        if self.proc.poll() is not None or time.time() > deadline:
          raise RuntimeError(f"gcp-storage-emulator did not start; see {self.log_path}")
        time.sleep(0.1)

  def objects(self, prefix=""):
    """Every object name under `prefix`, through the JSON API (no client library)."""
    names, token = [], None
    while True:
      query = f"prefix={urllib.parse.quote(prefix)}" + (f"&pageToken={token}" if token else "")
      with urllib.request.urlopen(f"{self.url}/storage/v1/b/{self.bucket}/o?{query}",
                                  timeout=10) as r:
        listing = json.loads(r.read())
      names += [o["name"] for o in listing.get("items", [])]
      token = listing.get("nextPageToken")
      if not token:
        return names

  def stop(self):
    if self.proc is not None and self.proc.poll() is None:
      os.killpg(self.proc.pid, signal.SIGTERM)
      try:
        self.proc.wait(5)
      except subprocess.TimeoutExpired:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
      self._log.close()


def _patch_emulator():
  """Adds the three behaviours above to the emulator's request handlers."""
  from gcp_storage_emulator import server, settings  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.exceptions import NotFound  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top
  stock_download, stock_insert = objects.download, objects.insert

  def download(request, response, storage, *args, **kwargs):
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    except NotFound:
      pass
    return stock_download(request, response, storage, *args, **kwargs)

  def insert(request, response, storage, *args, **kwargs):
    match = request.query.get("ifGenerationMatch")
    not_match = request.query.get("ifGenerationNotMatch")
    name = (request.query.get("name") or [None])[0]
    if (match or not_match) and name:
      try:
        current = str(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
      except NotFound:
        current = "0"
      if (match and match[0] != current) or (not_match and not_match[0] == current):
        response.status = HTTPStatus.PRECONDITION_FAILED
        response.json({"error": {"code": 412, "message": "Precondition Failed"}})
        return None
    return stock_insert(request, response, storage, *args, **kwargs)

  def move(request, response, storage, *args, **kwargs):
    del args, kwargs
    p = request.params
    try:
      moved = objects._copy(request.base_url, storage, p["bucket_name"], p["object_id"],  # pylint: disable=protected-access
                            p["bucket_name"], p["dest_object_id"])
    except NotFound:
      response.status = HTTPStatus.NOT_FOUND
      return
    objects._delete(storage, p["bucket_name"], p["object_id"])  # pylint: disable=protected-access
    response.json(moved)

  objects.download, objects.insert = download, insert
  swap = {stock_download: download, stock_insert: insert}
  moves = tuple((rf"^{prefix}/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)"
                 rf"/moveTo/o/(?P<dest_object_id>.*[^/]+)$", {server.POST: move})
                for prefix in (settings.API_ENDPOINT, ""))
  server.HANDLERS = moves + tuple((rx, {m: swap.get(f, f) for m, f in handlers.items()})
                                  for rx, handlers in server.HANDLERS)


if __name__ == "__main__":
  from gcp_storage_emulator import __main__ as cli  # pylint: disable=g-import-not-at-top
  _patch_emulator()
  cli.main()
