"""The line client: streams a camera's frames to the server's `Inspect` RPC (`vision line`).

Sources (video file, image folder, RTSP, /dev/videoN) are read by one thread that keeps only the
latest frame or a bounded queue; verdicts go to a JSONL log, a progress line, an optional
annotated video and a reject action. Camera and server outages are retried with back-off.
"""
