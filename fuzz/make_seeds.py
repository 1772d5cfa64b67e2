#!/usr/bin/env python3
"""Writes the hand-made seed inputs of fuzz/corpus/<target>/seed-*, from the repository's test
fixtures and the wire layouts (the sealed ones with Python's `cryptography`, not with the code
under test). Run from anywhere; it only (re)writes files named seed-*. The fuzzer's own finds and
regression inputs sit next to them under other names."""

import json
import os
import struct
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
FIX = ROOT / "crates" / "wolf-protocol" / "tests" / "fixtures" / "pairing"
KEY = bytes([0x42] * 16)  # the harnesses' rikey


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data.encode() if isinstance(data, str) else data)


def iv(seq, sender, stream):
    return struct.pack("<I", seq) + bytes(6) + sender + stream


SDP = (
    "v=0\r\no=android 0 14 IN IPv4 127.0.0.1\r\ns=NVIDIA Streaming Client\r\n"
    "a=x-nv-video[0].clientViewportWd:1280 \r\na=x-nv-video[0].clientViewportHt:720 \r\n"
    "a=x-nv-video[0].maxFPS:60 \r\na=x-nv-video[0].packetSize:1024 \r\n"
    "a=x-nv-vqos[0].bitStreamFormat:0 \r\na=x-ml-video.configuredBitrateKbps:10000 \r\n"
    "a=x-nv-vqos[0].fec.minRequiredFecPackets:2 \r\na=x-nv-general.featureFlags:167 \r\n"
    "a=x-ss-general.encryptionEnabled:5 \r\na=x-nv-aqos.packetDuration:5 \r\nt=0 0\r\nm=video 47998  \r\n"
)
SDP_SURROUND = SDP.replace("t=0 0", "a=x-nv-audio.surround.numChannels:6 \r\n"
                           "a=x-nv-audio.surround.channelMask:0x3f \r\na=x-nv-video[0].encoderCscMode:-1 \r\n"
                           "a=x-nv-video[0].videoEncoderSlicesPerFrame:4 \r\na=x-nv-vqos[0].bitStreamFormat:1 \r\nt=0 0")
SDP_FALLBACK = SDP.replace("configuredBitrateKbps:10000", "configuredBitrateKbps:0").replace(
    "t=0 0", "a=x-nv-vqos[0].bw.maximumBitrateKbps:20000 \r\na=x-nv-video[0].initialBitrateKbps:5000 \r\nt=0 0")


def req(method, target, cseq, headers=(), body=""):
    h = f"{method} {target} RTSP/1.0\r\nCSeq: {cseq}\r\nX-GS-ClientVersion: 14\r\nHost: 127.0.0.1\r\n"
    for k, v in headers:
        h += f"{k}: {v}\r\n"
    if body:
        h += f"Content-type: application/sdp\r\nContent-length: {len(body)}\r\n"
    return h + "\r\n" + body


def negotiation(session):
    s = [("Session", session)] if session else []
    return [
        req("OPTIONS", "rtsp://127.0.0.1:48010", 1),
        req("DESCRIBE", "rtsp://127.0.0.1:48010", 2, [("Accept", "application/sdp")]),
        req("SETUP", "streamid=audio/0/0", 3, [("Transport", "unicast;X-GS-ClientPort=50000-50001")]),
        req("SETUP", "streamid=video/0/0", 4, s + [("Transport", "unicast;X-GS-ClientPort=50000-50001")]),
        req("SETUP", "streamid=control/13/0", 5, s + [("Transport", "unicast;X-GS-ClientPort=50000-50001")]),
        req("ANNOUNCE", "streamid=control/13/0", 6, s, SDP),
        req("PLAY", "/", 7, s),
    ]


def rtsp():
    for i, r in enumerate(negotiation("DEADBEEFCAFE")):
        put("rtsp_request", f"moonlight-{i}", r)
    put("rtsp_request", "bad-content-length", req("OPTIONS", "rtsp://x", 1, [("Content-length", "-1")]))
    put("rtsp_announce", "moonlight", SDP)
    put("rtsp_announce", "surround-hevc", SDP_SURROUND)
    put("rtsp_announce", "bitrate-fallback", SDP_FALLBACK)
    steps = negotiation("FUZZ")
    for how in range(3):
        put("rtsp_session", f"negotiation-{how}", bytes([how | 4]) + "".join(steps).encode())
    put("rtsp_session", "play-twice", b"\x00" + "".join(steps + [req("PLAY", "/", 8, [("Session", "FUZZ")])]).encode())
    put("rtsp_session", "announce-early", b"\x01" + "".join([steps[0], steps[5], steps[6]]).encode())
    # Sealed as the client sends them (moonlight-common-c sealRtspMessage).
    for seq, r in enumerate(negotiation("DEADBEEFCAFE")[:2], start=1):
        plain = r.encode()
        ct = AESGCM(KEY).encrypt(iv(seq, b"C", b"R"), plain, None)
        put("rtsp_sealed", f"client-{seq}", struct.pack(">II", 0x80000000 | len(plain), seq) + ct[-16:] + ct[:-16])
    put("rtsp_sealed", "plain", struct.pack("<I", 9) + negotiation("X")[0].encode())


def control_packet(seq, msg_type, payload, sender=b"C"):
    plain = struct.pack("<HH", msg_type, len(payload)) + payload
    ct = AESGCM(KEY).encrypt(iv(seq, sender, b"C"), plain, None)
    return struct.pack("<HHI", 1, 4 + 16 + len(plain), seq) + ct[-16:] + ct[:-16]


def input_event(magic, event):
    return struct.pack(">I", 4 + len(event)) + struct.pack("<I", magic) + event


INPUTS = {
    "mouse-rel": input_event(0x07, struct.pack(">hh", 5, -3)),
    "mouse-abs": input_event(0x05, struct.pack(">hhhhh", 100, 200, 0, 1920, 1080)),
    "mouse-button": input_event(0x08, b"\x01"),
    "key-down": input_event(0x03, b"\x00\x41\x80\x00\x00\x00\x00"),
    "scroll": input_event(0x0A, struct.pack(">hhh", 120, 120, 0)),
    "utf8": input_event(0x17, "é".encode()),
}


def enet_connect(data):
    # Protocol header (flags | peer id 0xFFF, sent time), CONNECT command (ack flag, channel
    # 0xFF, reliable seq 1), outgoing peer id, session ids, MTU .. deceleration, connect id, data.
    head = struct.pack(">HH", 0x8000 | 0x0FFF, 1234) + bytes([0x82, 0xFF]) + struct.pack(">H", 1)
    params = struct.pack(">HBB8II", 0, 0xFF, 0xFF, 1400, 32768, 2, 0, 0, 5000, 2, 2, 0x12345678)
    return head + params + struct.pack(">I", data)


def control():
    put("control_message", "ping", control_packet(1, 0x0200, bytes([4, 0, 0, 0, 0, 0, 0, 0])))
    put("control_message", "idr-request", control_packet(2, 0x0302, b"\x00\x00"))
    put("control_message", "input", control_packet(3, 0x0206, INPUTS["mouse-rel"]))
    put("control_message", "termination", control_packet(0, 0x0109, bytes.fromhex("80030023"), b"H"))
    put("control_message", "enet-connect", enet_connect(0xDEADBEEF))
    for name, ev in INPUTS.items():
        put("input", name, ev)


def pairing():
    for host in ["wolf", "sunshine"]:
        v = json.loads((FIX / host / "vectors.json").read_text())
        lines = [v["salt"], v["clientcert"], "r" + v["server_secret"] + v["server_challenge"], "p" + v["pin"],
                 "c" + v["client_challenge_encrypted"], "s" + v["serverchallengeresp"], "f" + v["clientpairingsecret"]]
        put("pairing_steps", f"{host}-transcript", "\n".join(lines) + "\n")
        out_of_order = lines[:2] + ["c" + v["client_challenge_encrypted"], "f00", "p0000", "szz", "c0011"]
        put("pairing_steps", f"{host}-out-of-order", "\n".join(out_of_order) + "\n")
    v = json.loads((FIX / "wolf" / "vectors.json").read_text())
    q = f"uniqueid=0123456789ABCDEF&uuid=6b2a&devicename=roth&updateState=1&phrase=getservercert&salt={v['salt']}&clientcert={v['clientcert']}"
    put("http_query", "getservercert", q)
    put("http_query", "clientchallenge", f"uniqueid=0123456789ABCDEF&clientchallenge={v['client_challenge_encrypted']}")
    put("http_query", "launch",
        "uniqueid=0123456789ABCDEF&appid=1&mode=1280x720x60&additionalStates=1&sops=0&rikey=000102030405060708090a0b0c0d0e0f"
        "&rikeyid=-123456&localAudioPlayMode=0&surroundAudioInfo=196610&remoteControllersBitmap=0&gcmap=0&gcpersist=0&corever=1")
    put("http_query", "resume", "uniqueid=0123456789ABCDEF&rikey=FFEEDDCCBBAA99887766554433221100&rikeyid=4294967295&corever=0")
    put("http_query", "encoded", "devicename=A%20B+C%26D&uniqueid=x&uniqueid=y&=empty&flag&mode=%2B1280x0720x60")


def xml():
    put("xml", "serverinfo",
        '<?xml version="1.0" encoding="utf-8"?><root status_code="200"><hostname>h&lt;&amp;&gt;</hostname>'
        "<appversion>7.1.431.-1</appversion><GfeVersion>3.23.0.74</GfeVersion><uniqueid>c0ffee00</uniqueid>"
        "<HttpsPort>47984</HttpsPort><PairStatus>1</PairStatus><currentgame>0</currentgame>"
        "<state>SUNSHINE_SERVER_FREE</state></root>")
    put("xml", "unauthorized",
        '<?xml version="1.0" encoding="utf-8"?><root status_code="401" query="/serverinfo" '
        'status_message="The client is not authorized. Certificate verification failed."/>')
    put("xml", "applist",
        '<?xml version="1.0" encoding="utf-8"?><root status_code="200"><App><AppTitle>A &amp; B</AppTitle>'
        "<ID>7</ID><IsHdrSupported>0</IsHdrSupported></App></root>")
    put("xml", "pair", '<root status_code="200"><paired>1</paired><challengeresponse>00ff</challengeresponse></root>')
    put("xml", "text", "Living room PC \"quoted\" 'single' <tag> & \t tab\nnewline")


H264 = bytes([0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1, 0x67, 0x42, 0, 0x1F, 0, 0, 1, 0x06, 5, 5, 0, 0, 1, 0x68, 0xCE,
              0x38, 0x80, 0, 0, 0, 1, 0x65, 0x88, 0x84, 0, 0x10]) + bytes(range(1, 200))
HEVC = bytes([0, 0, 0, 1, 35 << 1, 1, 0x50, 0, 0, 0, 1, 32 << 1, 1, 7, 0, 0, 1, 39 << 1, 1, 5, 0, 0, 1, 33 << 1, 1,
              0, 0, 1, 34 << 1, 1, 0xC1, 0, 0, 1, 19 << 1, 1, 9, 9, 9, 0, 0, 1, 40 << 1, 1, 3])


def media():
    put("annexb", "h264", H264)
    put("annexb", "hevc", HEVC)
    put("annexb", "edge", bytes([0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 9, 0, 0, 1]))

    def video(mode, packet_size, fec, min_parity, idr, loss, frame, flips=b""):
        head = bytes([mode]) + struct.pack("<HBIBIHI", packet_size, fec, min_parity, idr, 90000, 12, loss)
        return head + frame + flips

    put("video_packetize", "idr-1024", video(0, 1024, 20, 2, 1, 0x5555_5555, H264))
    # Two blocks (over 255 shards) without parity: building a Reed-Solomon codec for blocks this
    # large is slow under coverage instrumentation, so the seed leaves that to mutations.
    put("video_packetize", "multi-block", video(0, 64, 0, 0, 0, 0xFFFF_FFFF, bytes(range(256)) * 52))
    put("video_packetize", "heavy-parity", video(0, 64, 255, 0, 1, 0x1111_1111, bytes(range(256)) * 14))
    put("video_packetize", "min-parity", video(0, 256, 0, 40, 1, 0x0F0F_0F0F, HEVC * 4))
    put("video_packetize", "corrupt", video(1, 128, 30, 1, 1, 0, H264, bytes([0, 40, 0xFF, 3, 9, 1])))
    put("video_packetize", "raw", bytes([2, 4]) + bytes([0x90, 0, 0, 1] + [0] * 28) * 3)

    def audio(packet_ms, flags, frames):
        out = struct.pack("<IIBi", packet_ms, 0x57474F4C, flags, -7)
        for f in frames:
            out += bytes([len(f)]) + f
        return out

    put("audio_packetize", "cbr-encrypted", audio(5, 1 | (1 << 1) | (3 << 3), [bytes([i]) * 40 for i in range(8)]))
    put("audio_packetize", "cbr-plain", audio(10, 0, [bytes([i]) * 17 for i in range(8)]))
    put("audio_packetize", "vbr", audio(5, 0, [bytes(n) for n in (10, 10, 10, 11, 0, 0, 0, 0)]) + b"642014235")


def state():
    sessions = {"version": 1, "sessions": [{
        "id": 3, "client_fingerprint": "ab" * 32, "client_ip": "192.168.1.20", "app_id": 1, "mode": "1920x1080x60",
        "codec": "hevc", "ports": {"rtsp": 48010, "video": 47998, "audio": 48000, "control": 47999},
        "runner": {"type": "process", "pid": 4242, "start_time": 123456}, "state": "paused",
        "surround_audio_info": 196610, "created_unix_ms": 1700000000000, "updated_unix_ms": 1700000001000,
        "last_activity_unix_ms": None}, {
        "id": 4, "client_fingerprint": "cd" * 32, "client_ip": "fe80::1", "app_id": 2, "mode": "1280x720x120",
        "codec": None, "ports": {"rtsp": 0, "video": 0, "audio": 0, "control": 0},
        "runner": {"type": "docker", "container_id": "0123abcd"}, "state": "streaming",
        "surround_audio_info": 0, "created_unix_ms": 0, "updated_unix_ms": 18446744073709551615,
        "last_activity_unix_ms": 5}]}
    put("state_sessions", "two", json.dumps(sessions, indent=2))
    put("state_sessions", "empty", '{"version": 1, "sessions": []}')
    put("state_sessions", "newer", '{"version": 2, "sessions": [], "more": true}')
    clients = {"version": 1, "clients": [{
        "fingerprint": "ab" * 32, "cert_pem": (FIX / "wolf" / "client_cert.pem").read_text(), "name": "roth",
        "uniqueid": "0123456789ABCDEF", "ip": "192.168.1.20", "paired_at": 1700000000}]}
    put("state_clients", "one", json.dumps(clients, indent=2))
    put("state_clients", "misshapen", '{"version": 1, "clients": [{"fingerprint": 1}]}')
    put("state_identity", "wolf", (FIX / "wolf" / "server_key.pem").read_bytes() + b"\0"
        + (FIX / "wolf" / "server_cert.pem").read_bytes())


def config():
    put("config", "template", (ROOT / "config.toml.template").read_text())
    put("config", "apps-env", """#!WOLF_PIN=1234, 5678
#!WOLF_MDNS=off
#!WOLF_INTERNAL_MAC=aa:bb:cc:dd:ee:ff
hostname = "den"
bind_address = "::"
[ports]
http = 0
rtsp_sessions = "0"
[pairing]
trusted_proxies = ["10.0.0.7", "fd00:1::/64"]
[video]
fec_percentage = 50
encoder = "x264"
[[apps]]
title = "Desktop"
id = 2
[apps.runner]
type = "process"
command = ["sleep", "infinity"]
env = { A = "1", "B C" = "2" }
[[apps]]
title = "Steam"
id = 3
[apps.runner]
type = "docker"
image = "ghcr.io/games-on-whales/steam"
mounts = ["/a:/b"]
""")
    put("config", "bad", 'hostname = 7\n[ports]\nhttp = 70000\nbogus = 1\n[[apps]]\nid = "x"\n')


rtsp()
control()
pairing()
xml()
media()
state()
config()
print("seeds written under", CORPUS)
