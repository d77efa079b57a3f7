"""Runs under `.venv-azure-device/bin/python` (azure-iot-device 2.14 pins paho-mqtt<2).

The SDK is used unmodified. It always dials port 8883; the hub under test listens on a free port,
so the only shim here redirects that one TCP connect, as a port mapping would.
Usage: azure_device_script.py CONNECTION_STRING CA_PEM PORT. Prints one JSON object per line.
"""

import json
import socket
import sys
import threading

connection_string, ca_path, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
_create_connection = socket.create_connection


def _redirect(address, *args, **kwargs):  # type: ignore[no-untyped-def]
    host, target = address
    return _create_connection((host, port if target == 8883 else target), *args, **kwargs)


socket.create_connection = _redirect

from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse  # noqa: E402


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


with open(ca_path) as handle:
    ca = handle.read()
client = IoTHubDeviceClient.create_from_connection_string(
    connection_string, server_verification_cert=ca
)
desired = threading.Event()
method_done = threading.Event()


def on_desired(patch: dict) -> None:
    say(event="desired", patch=patch)
    desired.set()


def on_method(request) -> None:  # type: ignore[no-untyped-def]
    say(event="method", name=request.name, payload=request.payload)
    client.send_method_response(
        MethodResponse.create_from_method_request(request, 200, {"done": True})
    )
    method_done.set()


client.connect()
message = Message(
    '{"temp": 21.5}', message_id="m-1", content_encoding="utf-8", content_type="application/json"
)
message.custom_properties["alert"] = "high temp"
client.send_message(message)
say(event="sent")
twin = client.get_twin()
say(event="twin", twin=twin)
client.patch_twin_reported_properties({"fw": "1.2.3"})
say(event="reported")
client.on_twin_desired_properties_patch_received = on_desired
client.on_method_request_received = on_method
say(event="ready")
ok = desired.wait(30) and method_done.wait(30)
client.shutdown()
say(event="done", ok=bool(ok))
