"""A small RTSP server for the line tests: serves one H.264 MP4 file in a loop.

Run by the system Python (`/usr/bin/python3`, with python3-gi and gst-rtsp-server from Debian),
not the virtualenv: `rtsp_server.py FILE PORT [PATH]`. Prints "ready" once it listens; every
client that connects gets the file from its start, re-encoded for low latency, looping.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def pipeline(path: str) -> str:
    # Decode and re-encode so every client starts on a key frame.
    return (
        f'( filesrc location="{path}" ! qtdemux ! h264parse ! avdec_h264 '
        "! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def main() -> None:
    path, port = sys.argv[1], sys.argv[2]
    mount = sys.argv[3] if len(sys.argv) > 3 else "/line"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(pipeline(path))
    # One media per client: shared media aborted the whole server under load when two clients
    # set up at once (gst_rtsp_media_get_rates: assertion failed, seen in CI), and a camera of
    # its own per client is what a line has anyway.
    factory.set_shared(False)
    server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on port {port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
