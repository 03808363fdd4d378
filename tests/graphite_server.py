"""A real graphite-web for heal's graphite probe test (tests/it/watch.rs):
Debian's graphite-web (its Django app, under the standard library's WSGI
server) on 127.0.0.1, reading whisper files this script writes with
python3-whisper; no carbon.

Usage: python3 graphite_server.py PORT STORAGE METRIC=V1,V2,... ...

Each METRIC (a dotted path) gets a whisper file under STORAGE/whisper with
one point a minute, the last one a minute ago; "null" leaves a point out.
Prints "ready" on stdout once it listens; runs until killed.
"""

import os
import sys
import time

port, storage, specs = int(sys.argv[1]), sys.argv[2], sys.argv[3:]

import whisper  # noqa: E402  (python3-whisper)

now = int(time.time())
for spec in specs:
    metric, values = spec.split("=", 1)
    path = os.path.join(storage, "whisper", *metric.split(".")) + ".wsp"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    whisper.create(path, [(60, 1440)])
    values = values.split(",")
    points = [
        (now - 60 * (len(values) - i), float(v))
        for i, v in enumerate(values)
        if v != "null"
    ]
    whisper.update_many(path, points)

os.makedirs(os.path.join(storage, "log", "webapp"), exist_ok=True)
# graphite-web reads its settings from this module (GRAPHITE_SETTINGS_MODULE).
with open(os.path.join(storage, "heal_graphite_settings.py"), "w") as f:
    f.write("SECRET_KEY = 'heal-test'\nCARBONLINK_HOSTS = []\n")
sys.path.insert(0, storage)
os.environ["GRAPHITE_SETTINGS_MODULE"] = "heal_graphite_settings"
os.environ["GRAPHITE_STORAGE_DIR"] = storage
os.environ["DJANGO_SETTINGS_MODULE"] = "graphite.settings"

from wsgiref.simple_server import WSGIRequestHandler, make_server  # noqa: E402

from graphite.wsgi import application  # noqa: E402


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


server = make_server("127.0.0.1", port, application, handler_class=Quiet)
print("ready", flush=True)
server.serve_forever()
